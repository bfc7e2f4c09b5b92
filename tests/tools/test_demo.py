"""``posswarm demo`` says why it gave up, and a store whose node dies says which one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from posswarm.errors import PosswarmError
from tools.lab import Lab, write_image


def test_a_demo_that_runs_out_of_time_says_where_each_node_was():
    posswarm = str(Path(sys.executable).with_name("posswarm"))
    result = subprocess.run([posswarm, "demo", "--devices", "1", "--image-mb", "8", "--timeout", "0.2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    said = result.stderr.replace("\n", " ")
    assert "not every device installed the image within 0.2 s" in said
    assert "cache=" in said and "till-01=" in said  # each node's state, not an empty reason


async def test_a_node_that_dies_after_it_started_ends_the_wait_with_its_name(tmp_path):
    lab = Lab(tmp_path, devices=1)
    image = write_image(tmp_path / "image.bin", 4)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await lab.start_central(nursery)
            for node in lab.nodes:
                await lab.start_node(nursery, node)
            while lab.status_of(lab.devices[0]) is None:
                await trio.sleep(0.1)
            lab.kill(lab.devices[0])
            await lab.publish(image, "1.0")
            with pytest.raises(PosswarmError, match="till-01 exited with code -9 after it started"):
                await lab.wait_installed("pos-image", "1.0", fail_on_exit=True)
        nursery.cancel_scope.cancel()
