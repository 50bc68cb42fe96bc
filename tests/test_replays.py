"""The replay API and replay files: seeking, views, export and import, and every way a file
can be broken being named rather than replayed."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from tests.recording import DUEL, MATCH, write_match
from tests.support import tickline
from tickline.replays import file as replay_file
from tickline.replays.reader import LogReader
from tickline.replays.replay import Replay
from tickline.replays.verify import verify_replay
from tickline.shared.game import state_hash
from tickline.shared.logformat import Divergence

TICKS = 900  # 15 s at 60 Hz: three file keyframes


@pytest.fixture
async def recorded(tmp_path: Path) -> tuple[str, dict[int, str]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    hashes = await write_match(url, ticks=TICKS, config=DUEL, players=4)
    return url, hashes


async def _from_log(url: str) -> Replay:
    async with await LogReader.open(url) as reader:
        return await Replay.from_log(reader, MATCH[:6])


async def test_seeking_gives_the_recorded_state_at_every_probed_tick(recorded: tuple[str, dict[int, str]]) -> None:
    url, hashes = recorded
    replay = await _from_log(url)
    for tick in (0, 1, 59, 60, 61, 437, TICKS):
        state = replay.state_at(tick)
        assert state["tick"] == tick
        if tick:
            assert state_hash(state) == hashes[tick]
    with pytest.raises(ValueError, match="outside the match"):
        replay.state_at(TICKS + 1)


async def test_frames_carry_the_ticks_inputs_events_and_views(recorded: tuple[str, dict[int, str]]) -> None:
    url, hashes = recorded
    replay = await _from_log(url)
    frames = list(replay.frames(100, 104))
    assert [f.tick for f in frames] == [100, 101, 102, 103, 104]
    assert all(f.hash == hashes[f.tick] for f in frames)
    assert set(replay.inputs(102).inputs) == {1, 2, 3, 4}
    state = replay.state_at(300)
    whole, mine = replay.full_view(state), replay.view(state, 1)
    # DUEL's view radius hides part of the map from each player.
    assert set(mine["players"]) < set(whole["players"]) or mine["players"] == whole["players"]
    assert "1" in mine["players"]
    kills = [m for m in replay.summary.marks if m.event["k"] == "kill"]
    assert kills, "the scripted duel has kills"
    assert any(e["k"] == "kill" for f in replay.frames(kills[0].tick, kills[0].tick) for e in f.events)
    assert replay.summary.players == {1: "p1", 2: "p2", 3: "p3", 4: "p4"}


async def test_an_exported_file_replays_to_the_same_states_and_summary(recorded: tuple[str, dict[int, str]]) -> None:
    url, hashes = recorded
    replay = await _from_log(url)
    data = replay_file.export_replay(replay)
    back = replay_file.replay_from(replay_file.decode(data))
    report = verify_replay(back)
    assert report.verified and report.ticks == TICKS and report.keyframes == 2, report
    assert replay_file.header_claims(back) == []
    assert state_hash(back.state_at(777)) == hashes[777]
    assert back.summary.result == replay.summary.result
    assert back.file_header is not None and back.file_header["marks"] == [
        [m.tick, m.event] for m in replay.summary.marks
    ]
    header, _ = replay_file.decode_header(data[:4096])  # the header alone, without the body
    assert header["players"] == {"1": "p1", "2": "p2", "3": "p3", "4": "p4"} and header["ticks"] == TICKS


def _parts(data: bytes) -> tuple[int, int, int]:
    """(header start, body start, body end) of a replay file."""
    (length,) = struct.unpack_from("<I", data, 18)
    body_length_at = 22 + length + 16
    (body,) = struct.unpack_from("<Q", data, body_length_at)
    return 22, body_length_at + 8, body_length_at + 8 + body


async def test_a_broken_file_is_refused_with_the_part_named(recorded: tuple[str, dict[int, str]]) -> None:
    url, _ = recorded
    data = replay_file.export_replay(await _from_log(url))
    head, body, end = _parts(data)

    def refused(bad: bytes) -> str:
        with pytest.raises(replay_file.ReplayFileError) as caught:
            replay_file.replay_from(replay_file.decode(bad))
        return str(caught.value)

    assert "not a tickline replay file" in refused(b"PK\x03\x04" + data[4:])
    assert "format 7" in refused(data[:16] + struct.pack("<H", 7) + data[18:])
    assert "ends inside its header" in refused(data[: head + 10])
    assert "body should be" in refused(data[: body + 100])
    assert "stray bytes" in refused(data + b"\0")
    flipped = bytearray(data)
    flipped[head + 5] ^= 1
    assert "header's checksum" in refused(bytes(flipped))
    flipped = bytearray(data)
    flipped[(body + end) // 2] ^= 1
    assert "body's checksum" in refused(bytes(flipped))


def _rewrite(data: bytes, change_header: object = None, change_body: object = None) -> bytes:
    """A file altered on purpose, with fresh checksums (as a forger would)."""
    contents = replay_file.decode(data)
    if callable(change_header):
        change_header(contents.header)
    if callable(change_body):
        change_body(contents.body)
    return replay_file.encode(contents.header, zstandard.ZstdCompressor().compress(orjson.dumps(contents.body)))


async def test_a_forged_input_is_found_at_the_first_tick_it_changes(recorded: tuple[str, dict[int, str]]) -> None:
    url, _ = recorded
    data = replay_file.export_replay(await _from_log(url))

    def teleport(body: dict[str, Any]) -> None:
        body["inputs"][499]["i"][0][1]["mx"] = 1 - body["inputs"][499]["i"][0][1]["mx"]  # tick 500, player 1

    forged = replay_file.replay_from(replay_file.decode(_rewrite(data, change_body=teleport)))
    report = verify_replay(forged)
    assert not report.verified and report.first_bad_tick == 500, report
    with pytest.raises(Divergence) as caught:
        forged.state_at(550)  # from the keyframe at 300, through the forged tick
    assert caught.value.tick == 500


async def test_a_forged_score_in_the_header_is_found(recorded: tuple[str, dict[int, str]]) -> None:
    url, _ = recorded
    data = replay_file.export_replay(await _from_log(url))

    def crown(header: dict[str, Any]) -> None:
        header["result"]["scores"]["1"] = 99

    forged = replay_file.replay_from(replay_file.decode(_rewrite(data, change_header=crown)))
    assert verify_replay(forged).verified  # the ticks are all right...
    assert replay_file.header_claims(forged) == ["the header's result is not what the replay gives"]


async def test_a_file_keeps_its_logs_hash_version_and_one_from_before_versions_reads_as_1(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'v1.db'}"
    hashes = await write_match(url, ticks=300, config=DUEL, players=4, hash_version=1)
    data = replay_file.export_replay(await _from_log(url))
    assert replay_file.decode(data).header["hash_version"] == 1
    unversioned = _rewrite(data, change_header=lambda header: header.pop("hash_version"))  # as written before
    for file in (data, unversioned):
        back = replay_file.replay_from(replay_file.decode(file))
        assert back.header.hash_version == 1
        assert verify_replay(back).verified and back.hash(back.state_at(200)) == hashes[200]
    unknown = _rewrite(data, change_header=lambda header: header.update(hash_version=9))
    with pytest.raises(replay_file.ReplayFileError, match="hashes are of version 9, which this tickline does not"):
        replay_file.replay_from(replay_file.decode(unknown))


@pytest.mark.slow
async def test_export_info_verify_and_import_from_the_command_line(
    recorded: tuple[str, dict[int, str]], tmp_path: Path
) -> None:
    url, hashes = recorded
    out = tmp_path / "duel.tlr"
    status, stdout, stderr = await tickline("replay", "export", MATCH[:8], "-o", str(out), "--db", url)
    assert status == 0, stderr
    assert orjson.loads(stdout)["bytes"] == out.stat().st_size
    status, stdout, _ = await tickline("replay", "info", str(out))
    assert status == 0 and orjson.loads(stdout)["final_hash"] == hashes[TICKS]
    status, stdout, _ = await tickline("replay", "verify", str(out))
    assert status == 0 and orjson.loads(stdout)["verified"] is True
    other = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    status, stdout, stderr = await tickline("replay", "import", str(out), "--db", other)
    assert status == 0, stderr
    status, stdout, _ = await tickline("replay", "verify", MATCH, "--db", other)
    assert status == 0 and orjson.loads(stdout)["final_state_hash"] == hashes[TICKS]
    status, _, stderr = await tickline("replay", "import", str(out), "--db", other)
    assert status == 2 and "already in the log" in stderr and len(stderr.splitlines()) == 1

    cut = tmp_path / "cut.tlr"
    cut.write_bytes(out.read_bytes()[:-100])
    status, stdout, stderr = await tickline("replay", "verify", str(cut))
    assert status == 1 and stderr.strip().endswith("are there") and "truncated replay file" in stderr
    status, _, stderr = await tickline("replay", "import", str(cut), "--db", other)
    assert status == 1 and "truncated replay file" in stderr


async def test_verifying_in_processes_gives_the_verdict_of_one_pass(recorded: tuple[str, dict[int, str]]) -> None:
    url, _ = recorded
    replay = await _from_log(url)
    one = verify_replay(replay)
    many = verify_replay(replay, workers=2, parallel_from=0)
    assert many == one and many.verified and many.keyframes == TICKS // 60

    forged = replay_file.replay_from(replay_file.decode(replay_file.export_replay(replay)))
    record = forged.steps[700].record  # tick 701
    assert isinstance(record, dict)
    record["i"][1][1]["fire"] = not record["i"][1][1]["fire"]
    one, many = verify_replay(forged), verify_replay(forged, workers=2, parallel_from=0)
    assert not many.verified and many.first_bad_tick == one.first_bad_tick == 701, many
    assert many.ticks == one.ticks == 700


@pytest.mark.slow
async def test_render_and_clip_from_the_command_line(recorded: tuple[str, dict[int, str]], tmp_path: Path) -> None:
    url, _ = recorded
    page, pictures, gif = tmp_path / "duel.html", tmp_path / "png", tmp_path / "duel.gif"
    status, stdout, stderr = await tickline(
        "replay", "render", MATCH[:8], "-o", str(page), "--png", str(pictures), "--gif", str(gif), "--to", "120",
        "--db", url,
    )  # fmt: skip
    assert status == 0, stderr
    written = orjson.loads(stdout)
    assert written["html"] == str(page) and page.read_text().lower().startswith("<!doctype html>")
    assert sorted(Path(p).name for p in written["png"]) == ["heatmap.png", "kills.png", "scores.png"]
    assert gif.read_bytes()[:6] == b"GIF89a"

    clip = tmp_path / "kill.html"
    status, stdout, stderr = await tickline(
        "replay", "clip", MATCH, "--event", "kill:1", "--before", "1s", "--after", "0.5s", "-o", str(clip), "--db", url
    )
    assert status == 0, stderr
    shown = orjson.loads(stdout)
    assert shown["event"]["k"] == "kill" and clip.exists()
    assert (shown["from"], shown["to"]) == (max(1, shown["tick"] - 60), min(TICKS, shown["tick"] + 30))

    status, _, stderr = await tickline("replay", "clip", MATCH, "--event", "kill:999", "--gif", str(gif), "--db", url)
    assert status == 2 and "there is no kill:999" in stderr and len(stderr.splitlines()) == 1
    status, _, stderr = await tickline("replay", "render", MATCH, "--db", url)
    assert status == 2 and "say what to render" in stderr
