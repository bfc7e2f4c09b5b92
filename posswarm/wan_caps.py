"""Apply the WAN cap of the store-local time to the torrent session (the trio driver of posswarm/wan_window.py)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import trio

from posswarm import logs, wan_window
from posswarm.config import NodeConfig, kbps_to_bytes_per_s
from posswarm.torrent.session import TorrentSession

log = logs.get("node")

#: Windows are minutes long; a re-check every 20 s applies a new one within a third of a minute.
CHECK_EVERY_S = 20


class WanCaps:
    """The caps in force, (download, upload) kbit/s with 0 for none; ``run`` follows ``wan.schedule``."""

    def __init__(self, config: NodeConfig, torrents: TorrentSession) -> None:
        self.config = config
        self.torrents = torrents
        self.kbps = (config.wan_download_kbps, config.wan_upload_kbps)

    async def run(self) -> None:
        c = self.config
        windows = [wan_window.parse(entry) for entry in c.wan_schedule]
        zone = ZoneInfo(c.timezone)
        applied = None
        while True:
            now = datetime.now(zone)
            caps = (wan_window.cap_at(windows, now, c.wan_download_kbps), wan_window.cap_at(windows, now, c.wan_upload_kbps))
            if caps != applied:
                await self.torrents.set_wan_limits(kbps_to_bytes_per_s(caps[0]), kbps_to_bytes_per_s(caps[1]))
                log.info("wan.caps", download_kbps=caps[0], upload_kbps=caps[1], local_time=now.strftime("%a %H:%M"))
                applied = self.kbps = caps
            await trio.sleep(CHECK_EVERY_S)
