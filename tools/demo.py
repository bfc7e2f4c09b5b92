"""``posswarm demo``: bring up a whole store on this machine and show a new image reaching every device."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from pathlib import Path

import httpx
import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from posswarm.errors import PosswarmError
from posswarm.release import wire_size
from posswarm.service import leaves
from tools import payloads
from tools.lab import Lab

RELEASE = "pos-image"
VERSION = "2026.11.0"


def demo_main(args) -> int:
    if args.image_mb < 1:
        raise PosswarmError(f"--image-mb {args.image_mb}: the image must be at least 1 MiB")
    payloads.check_kind(args.payload)
    console = Console(stderr=True)
    root = Path(tempfile.mkdtemp(prefix="posswarm-demo-"))
    try:
        try:
            result = trio.run(_until_interrupted, root, args, console)
        except BaseExceptionGroup as group:  # an expected failure inside the store's nursery: say it in one line
            expected = [e for e in leaves(group) if isinstance(e, PosswarmError)]
            if not expected:
                raise
            raise expected[0] from None
        if result is None:
            console.print("[yellow]interrupted; every demo process was stopped[/]")
            return 130
    finally:
        if args.keep:
            console.print(f"demo files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))
    elif getattr(args, "slots", False):
        from tools import demo_slots

        demo_slots.print_result(Console(), result)
    else:
        _print_result(Console(), result)
    return 0 if result["all_installed"] else 1


async def _until_interrupted(root: Path, args, console: Console) -> dict | None:
    """The demo, or None when SIGINT/SIGTERM stopped it first (Ctrl-C; also when started in the background)."""
    result: dict = {}

    async def demo(cancel_scope: trio.CancelScope) -> None:
        result.update(await _demo(root, args, console))
        cancel_scope.cancel()

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(demo, nursery.cancel_scope)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return result or None


async def _demo(root: Path, args, console: Console) -> dict:
    lab = Lab(root, devices=args.devices)
    if getattr(args, "slots", False):  # OS images into A/B boot slots: tools/demo_slots.py
        from tools import demo_slots

        return await demo_slots.run(lab, payloads.first(root / "payload", args.image_mb, args.payload), args, console)
    console.print(f"[bold]posswarm demo[/]: store {lab.store}, LAN {lab.lan_network}, "
                  f"1 cache + {args.devices} devices, {args.image_mb} MiB image ({args.payload})")
    image = payloads.first(root / "payload", args.image_mb, args.payload)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            console.print(f"tracker {lab.tracker_url}   seeder {lab.seeder_url}   "
                          f"operator token {lab.operator_token_file}")
            for node in lab.nodes:
                await lab.start_node(nursery, node)
        console.print(f"started {len(lab.nodes)} nodes; publishing {RELEASE} {VERSION} ...")
        published = await lab.publish(image, VERSION, name=RELEASE)
        console.print(published["summary"])
        all_installed = True
        with Live(_progress_table(lab, published), console=console, refresh_per_second=4) as live:
            try:
                with trio.fail_after(args.timeout):
                    await lab.wait_installed(RELEASE, VERSION, fail_on_exit=True,
                                             on_tick=lambda: live.update(_progress_table(lab, published)))
            except trio.TooSlowError:
                all_installed = False
                console.print(f"[red]not every device installed the image within {args.timeout} s: "
                              f"{lab.describe(RELEASE, VERSION)} (logs in {lab.logs}; --keep keeps them)[/]")
            except PosswarmError as exc:
                all_installed = False
                console.print(f"[red]not every device installed the image: {exc}[/]")
            live.update(_progress_table(lab, published))
        stored = wire_size(lab.releases / RELEASE / VERSION)
        result = _result(lab, published, image.stat().st_size, stored, all_installed)
        result["tracker"] = await _tracker_view(lab)
        nursery.cancel_scope.cancel()
    return result


def _progress_table(lab: Lab, published: dict) -> Table:
    table = Table("node", "role", "state", "progress", "from WAN", "from LAN", "seconds", title="rollout")
    for node in lab.nodes:
        r = lab.release_of(node, RELEASE, VERSION)
        if r is None:
            table.add_row(node.name, node.role, "waiting", "", "", "", "")
            continue
        seconds = f"{r['done_at'] - published['published_at']:.1f}" if r["done_at"] else ""
        bar = "#" * int(r["percent"] / 5)
        table.add_row(node.name, node.role, r["state"], f"{bar:<20} {r['percent']:5.1f}%",
                      _mb(r["bytes_from_wan"]), _mb(r["bytes_from_lan"]), seconds)
    return table


def _result(lab: Lab, published: dict, image_bytes: int, stored_bytes: int, all_installed: bool) -> dict:
    """The demo's figures; WAN amplification is against ``stored_bytes``, what the WAN must carry once."""
    devices, wan_total = [], 0
    for node in lab.nodes:
        r = lab.release_of(node, RELEASE, VERSION) or {}
        wan_total += r.get("bytes_from_wan", 0)
        if node.role == "device":
            done = r.get("done_at")
            devices.append({
                "id": node.name,
                "installed": r.get("state") == "installed",
                "seconds": round(done - published["published_at"], 2) if done else None,
                "bytes_from_wan": r.get("bytes_from_wan", 0),
                "bytes_from_lan": r.get("bytes_from_lan", 0),
            })
    cache = lab.release_of(lab.cache, RELEASE, VERSION) or {}
    return {
        "image_bytes": image_bytes,
        "stored_bytes": stored_bytes,
        "wan_bytes": wan_total,
        "wan_amplification": round(wan_total / stored_bytes, 4),
        "all_installed": all_installed and all(d["installed"] for d in devices),
        "cache": {
            "seconds": round(cache["done_at"] - published["published_at"], 2) if cache.get("done_at") else None,
            "bytes_from_wan": cache.get("bytes_from_wan", 0),
            "bytes_uploaded": cache.get("bytes_uploaded", 0),
        },
        "devices": devices,
    }


async def _tracker_view(lab: Lab) -> dict:
    """What the tracker's /stats says of this store: the network engineer's view of the same rollout."""
    try:
        async with httpx.AsyncClient(timeout=5, verify=lab.central_tls) as client:
            response = await client.get(f"{lab.tracker_url}/stats", headers=lab.operator_headers)
            response.raise_for_status()
            store = response.json()["releases"][f"{RELEASE}@{VERSION}"]["stores"][lab.store]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return {"error": f"tracker stats unavailable ({type(exc).__name__})"}
    return {"devices_installed": store["devices_installed"], "devices_total": store["devices_total"],
            "wan_bytes": store["wan_bytes"], "wan_amplification": store["wan_amplification"]}


def _print_result(console: Console, result: dict) -> None:
    table = Table("node", "installed", "seconds", "bytes from WAN", "bytes from LAN", title="per node")
    c = result["cache"]
    table.add_row("cache", "seeding" if c["seconds"] is not None else "no", _s(c["seconds"]),
                  f"{c['bytes_from_wan']:,}", "-")
    for d in result["devices"]:
        table.add_row(d["id"], "yes" if d["installed"] else "NO", _s(d["seconds"]),
                      f"{d['bytes_from_wan']:,}", f"{d['bytes_from_lan']:,}")
    console.print(table)
    console.print(f"image {result['image_bytes']:,} bytes, {result['stored_bytes']:,} as compressed chunks; entered the "
                  f"store from the WAN {result['wan_bytes']:,} bytes; WAN amplification (against the compressed "
                  f"chunks) [bold]{result['wan_amplification']:.3f}[/]")
    t = result["tracker"]
    if "error" not in t:
        console.print(f"tracker /stats for this store: {t['devices_installed']}/{t['devices_total']} devices installed, "
                      f"WAN amplification {t['wan_amplification']}")
    console.print("[green]every device installed the verified image[/]" if result["all_installed"]
                  else "[red]not every device installed the image[/]")


def _s(seconds: float | None) -> str:
    return f"{seconds:.1f}" if seconds is not None else "-"


def _mb(n: int) -> str:
    return f"{n / 1e6:7.1f} MB"


