"""A till's two boot slots: which one booted, confirm or give up a trial at start, write the next image into the
other one and arm it for one trial boot. Blocking calls (the bootloader's tools, the disk): run them from a thread."""

from __future__ import annotations

from pathlib import Path

from posswarm import garbage, health, install, logs
from posswarm.capped_read import read_capped
from posswarm.chunks import chunk_relpath
from posswarm.config import NodeConfig
from posswarm.datadir import DataDir
from posswarm.lifecycle import Installed, Record
from posswarm.manifest import Manifest
from posswarm.release import TORRENT_NAME, torrent_chunk_roots
from posswarm.slots import delta, state, writer
from posswarm.slots.bootloader import Bootloader
from posswarm.slots.source import read_into
from posswarm.staged_payload import StagedPayload

log = logs.get("node")
#: Bad chunks named one by one in the log line of a slot read; past this, only their count.
NAMED_BAD = 8
#: The kernel command line is a few KiB at most; a bigger "cmdline" file is not one.
MAX_CMDLINE = 64 * 1024


class BootSlots:
    """The slots of ``install.slots``, with the environment as last read or written (this node is its only writer
    while it runs; the bootloader writes it only before the node starts)."""

    def __init__(self, config: NodeConfig, data: DataDir) -> None:
        self.config = config
        self.data = data
        self.paths = dict(zip(state.SLOT_IDS, (Path(p) for p in config.slots), strict=True))
        self.bootloader = Bootloader(config.bootloader, env_file=config.bootloader_env,
                                     get_command=config.env_get_command, set_command=config.env_set_command)
        self.booted = ""
        self.env: state.BootEnv | None = None

    def start(self) -> str:
        """Learn the booted slot and settle a trial: confirm it (health check passes), reject it, or record that
        the bootloader fell back. Returns what happened (state.TRIAL outcomes, "" for a normal boot)."""
        source = self.config.boot_cmdline
        cmdline = read_capped(source, MAX_CMDLINE, "install.boot_cmdline", too_big="not a kernel command line")
        self.booted = state.booted_slot(cmdline.decode(errors="replace"), source=source)
        self._read()
        found, updates = state.on_start(self.env, self.booted)
        if found == state.FELL_BACK:
            trial = self.env.slots[self.env.trial]
            self._write(updates)
            install.hold(self.data.installed(trial.name), trial.version)
            log.error("slot.fell_back", slot=trial.id, release=f"{trial.name} {trial.version}", reason=self.env.reason)
        elif found == state.TRIAL:
            found = self._settle_trial()
        self.trim()
        return found

    def _settle_trial(self) -> str:
        s = self.env.slots[self.booted]
        c = self.config
        problem = None
        if c.health_check:
            done = health.run(c.health_check, env=health.environment(name=s.name, version=s.version,
                                                                      path=self.paths[s.id], kind="image"),
                              cwd=self.data.root, timeout_s=c.health_timeout_s)
            problem = health.explain(done, what="health check", command=c.health_check, timeout_s=c.health_timeout_s)
        if problem is None:
            self._write(state.confirm(self.booted))
            log.info("slot.confirmed", slot=s.id, release=f"{s.name} {s.version}")
            return state.CONFIRMED
        old = self.env.slots[self.env.primary]
        self._write(state.reject(self.booted, f"{problem}; back to slot {old.id} ({old.name} {old.version})"))
        install.hold(self.data.installed(s.name), s.version)
        log.error("slot.rejected", slot=s.id, release=f"{s.name} {s.version}", reason=problem, back_to=old.id)
        self.reboot()
        return state.REJECTED

    def holds(self, name: str) -> bool:
        return self.env is not None and any(s.name == name for s in self.env.slots.values())

    def installed(self, name: str, held: frozenset[str]) -> Installed:
        current, previous, pending = state.running(self.env, self.booted, name)
        return Installed(current, previous, held, pending)

    def keeps(self, manifest: Manifest | None) -> bool:
        """A slot holds ``manifest``'s image confirmed (state good): read from there, its chunks are not kept as files."""
        m = manifest
        return (self.env is not None and m is not None and m.kind == "image"
                and any((s.name, s.version, s.state) == (m.name, m.version, "good") for s in self.env.slots.values()))

    def trim(self) -> None:
        """Drop the chunk files of every release a slot holds confirmed: a till keeps no second copy of its OS."""
        for s in self.env.slots.values():
            if s.state == "good" and s.name and s.version:
                freed = garbage.trim_release(self.data, s.name, s.version)
                if freed:
                    log.info("slot.release_trimmed", slot=s.id, release=f"{s.name} {s.version}", freed_bytes=freed)

    def read_chunks(self, next_release: Manifest, records: list[Record], release_dir: Path) -> int:
        """The chunks of ``next_release`` (laid out in ``release_dir``) that the booted slot holds and the
        directory lacks, written there as checked chunk files; their stored bytes. The rest is the swarm's."""
        m, slot = next_release, self.booted
        here = self.env.slots[slot] if self.env is not None else None
        if m.kind != "image" or here is None or here.name != m.name or here.version in ("", m.version):
            return 0
        running = next((r.manifest for r in records if (r.name, r.version) == (m.name, here.version)), None)
        if running is None:
            return 0
        have = {c.digest for c in m.unique_chunks() if (release_dir / chunk_relpath(c.digest)).exists()}
        wanted = delta.from_slot(m, running, have)
        roots = torrent_chunk_roots((release_dir / TORRENT_NAME).read_bytes())
        try:
            done = read_into(self.paths[slot], wanted, release_dir, roots, m.piece_size)
        except OSError as exc:  # a slot that cannot be read costs the delta, never the update: the swarm sends it all
            log.error("slot.read_failed", slot=slot, device=str(self.paths[slot]), release=m.release_id,
                      reason=f"{exc.strerror or exc}; every chunk is fetched instead")
            return 0
        if done.bad:  # never written into the other slot: each is fetched and checked like any other
            log.error("slot.chunks_bad", slot=slot, device=str(self.paths[slot]), release=m.release_id,
                      running=running.release_id, count=len(done.bad),
                      chunks=",".join(f"{c.ref.hex[:16]}@{c.offset}" for c in done.bad[:NAMED_BAD]),
                      reason="content does not match its BLAKE3 (the slot changed underneath); fetched instead")
        if done.repacked_differently:
            log.warning("slot.chunks_repacked_differently", slot=slot, release=m.release_id,
                        count=len(done.repacked_differently),
                        reason="this zstd build packs them into other bytes than the torrent names; fetched instead")
        log.info("slot.chunks_read", slot=slot, release=m.release_id, running=running.release_id,
                 chunks=done.chunks, stored_bytes=done.stored_bytes, of=len(wanted))
        return done.stored_bytes

    def begin(self, manifest: Manifest) -> StagedPayload:
        """The slot not booted, marked as being written (so never booted) and opened for ``manifest``'s image."""
        m = manifest
        slot = self.env.other(self.booted)
        self._write(state.start_writing(self.env, slot, m.name, m.version))  # before the first byte: never booted
        log.info("slot.writing", slot=slot, device=str(self.paths[slot]), release=m.release_id, size=m.total_size)
        return StagedPayload.into_slot(m, self.paths[slot])

    def install(self, manifest: Manifest, release_dir: Path, staged: StagedPayload | None = None) -> None:
        """Finish ``manifest``'s image in the slot not booted (``staged``: what ``begin`` opened and the download
        wrote), check it, arm it for one trial boot, reboot."""
        m = manifest
        slot = self.env.other(self.booted)
        mine = self.env.slots[slot]
        if staged is None or (mine.name, mine.version, mine.state) != (m.name, m.version, "writing"):
            if staged is not None:
                staged.close()  # another image began writing the slot meanwhile: write it all again
            staged = self.begin(m)
        writer.write(m, release_dir, self.paths[slot], staged)
        self._write(state.arm_trial(slot))
        log.info("slot.armed", slot=slot, release=m.release_id, tries=state.TRIAL_BOOTS)
        self.reboot()

    def reboot(self) -> None:
        command = self.config.reboot_command
        if not command:
            log.info("slot.reboot_needed", boots=self.env.trial or self.env.primary)
            return
        done = health.run(command, env={"PATH": health.SAFE_PATH, "LANG": "C.UTF-8"}, cwd=self.data.root,
                          timeout_s=self.config.health_timeout_s)
        problem = health.explain(done, what="reboot command", command=command, timeout_s=self.config.health_timeout_s)
        if problem:
            log.error("slot.reboot_failed", reason=problem)

    def status(self) -> dict | None:
        if self.env is None:
            return None
        return state.describe(self.env, self.booted) | {
            "devices": {i: str(p) for i, p in self.paths.items()}}

    def _read(self) -> None:
        self.env = state.parse_env(self.bootloader.read(), source=self.bootloader.what)

    def _write(self, updates: dict[str, str]) -> None:
        self.bootloader.write(updates)
        self._read()  # what the environment says now, not what we meant it to say
