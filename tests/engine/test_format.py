"""The backup format without I/O: envelope, layout, manifest, COPY decoding, AS OF SYSTEM TIME."""
from __future__ import annotations

import datetime as dt
import os
import struct

import pytest

from engine.asof import resolve_as_of
from engine.errors import DataCorrupted, Unsupported
from engine.format import layout
from engine.format.copystream import BINARY_SIGNATURE, CopyDecoder
from engine.format.envelope import FRAME_CONTENT, LevelHint, Opener, Sealer, open_bytes, seal
from engine.format.manifest import Chunk, DatabaseEntry, FileRef, Manifest, TableEntry


def test_envelope_round_trip_streaming_and_checksum():
    content = os.urandom(100_000) + b"x" * 1_000_000
    s = Sealer(3)
    stored = b"".join(s.feed(content[i:i + 7777]) for i in range(0, len(content), 7777)) + s.finish()
    assert stored[:4] == b"PGKF" and s.stored_size == len(stored) and s.logical_size == len(content)
    assert len(stored) < len(content)
    o = Opener("f", s.sha256, len(stored))
    out = b"".join(o.feed(stored[i:i + 999]) for i in range(0, len(stored), 999))
    o.finish()
    assert out == content


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_envelope_detects_damage(damage):
    stored, sha = seal(b"hello world" * 1000)
    if damage == "flip":
        stored = stored[:20] + bytes([stored[20] ^ 1]) + stored[21:]
    elif damage == "truncate":
        stored = stored[:-3]
    else:
        stored = b"XXXX" + stored[4:]
    with pytest.raises(DataCorrupted) as e:
        open_bytes("data/0/1-0-0.pgkd", stored, sha)
    assert e.value.sqlstate == "XX001"


def test_encrypted_envelope_is_refused_not_misread():
    stored, _ = seal(b"x")
    stored = stored[:5] + bytes([stored[5] | 2]) + stored[6:]
    with pytest.raises(Unsupported):
        open_bytes("f", stored)


def test_layout_names():
    t = dt.datetime(2026, 3, 1, 10, 0, 5, 123456, tzinfo=dt.timezone.utc)
    assert layout.full_subdir(t) == "/2026/03/01-100005.12"
    assert layout.SUBDIR_RE.match("2026/03/01-100005.12")
    assert layout.parse_subdir("2026/03/01-100005.12/") == "/2026/03/01-100005.12"
    newer = layout.latest_marker(t + dt.timedelta(seconds=1))
    older = layout.latest_marker(t)
    assert newer < older and newer.startswith("metadata/latest/LATEST-")


def test_manifest_round_trip_and_version_check():
    m = Manifest(id="x", job_id=1, backup_type="full", scope="database",
                 end_time="2026-01-01T00:00:00+00:00", server_version=180000, pgkeep_version="0.1.0",
                 file_size_target=1 << 20,
                 databases=[DatabaseEntry(0, "bank", "2026-01-01T00:00:00+00:00",
                                          FileRef("s", 1, "ab"), True,
                                          [TableEntry(5, "public", "t", "r", "binary", ["a"], 3, 9,
                                                      [Chunk(0, 3, [FileRef("d", 2, "cd", 9)])])])])
    again = Manifest.from_bytes(m.to_bytes())
    assert again == m and [f.path for f in again.all_files()] == ["s", "d"]
    with pytest.raises(Unsupported):
        Manifest.from_bytes(m.to_bytes().replace(b'"format_version":2', b'"format_version":99'))
    v1 = Manifest.from_bytes(m.to_bytes().replace(b'"format_version":2', b'"format_version":1'))
    assert v1.format_version == 1 and v1.databases == m.databases   # version 1 stays readable


def _binary_copy(rows: list[list[bytes | None]]) -> bytes:
    out = BINARY_SIGNATURE + struct.pack("!ii", 0, 0)
    for r in rows:
        out += struct.pack("!h", len(r))
        for v in r:
            out += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    return out + struct.pack("!h", -1)


def test_copy_decoder_counts_rows_at_every_split():
    stream = _binary_copy([[b"1", None], [b"22", b"abc"], [b"", b"x" * 300]])
    for cut in range(len(stream) + 1):
        d = CopyDecoder("t", "binary", 2)
        d.feed(stream[:cut])
        d.feed(stream[cut:])
        assert d.finish() == 3
    d = CopyDecoder("t", "binary", 3)
    with pytest.raises(DataCorrupted):
        d.feed(stream)
    d = CopyDecoder("t", "binary", 2)
    d.feed(stream[:-2])
    with pytest.raises(DataCorrupted):
        d.finish()


def test_as_of_forms():
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert resolve_as_of("-10s", now) == now - dt.timedelta(seconds=10)
    assert resolve_as_of("-1m30s", now) == now - dt.timedelta(seconds=90)
    assert resolve_as_of("-10 seconds", now) == now - dt.timedelta(seconds=10)
    assert resolve_as_of("2026-01-01 11:00:00", now) == now - dt.timedelta(hours=1)
    assert resolve_as_of(str(int((now.timestamp() - 5) * 1e9)) + ".0000000000", now) == now - dt.timedelta(seconds=5)
    assert resolve_as_of("follower_read_timestamp", now, is_function=True) < now
    for future in ("10s", "2027-01-01", str(int((now.timestamp() + 60) * 1e9))):
        with pytest.raises(Exception) as e:
            resolve_as_of(future, now)
        assert e.value.sqlstate == "22023"
    with pytest.raises(Exception) as e:
        resolve_as_of("yesterday-ish", now)
    assert e.value.sqlstate == "22023"


def test_opener_pieces_are_bounded_and_split_anywhere():
    content = b"\0" * (64 << 20)  # compresses ~1000x: one feed must not inflate it whole
    stored, sha = seal(content, 1)
    for step in (7, 4096, len(stored)):
        o = Opener("zeros", sha, len(stored))
        total, biggest = 0, 0
        for i in range(0, len(stored), step):
            o.push(stored[i:i + step])
            while (piece := o.pull()) is not None:
                total += len(piece)
                biggest = max(biggest, len(piece))
        o.finish()
        assert total == len(content)
        assert biggest <= FRAME_CONTENT


def _pgbench_like_rows(n: int) -> bytes:
    """Text COPY rows shaped like pgbench_accounts: counters and a blank-padded char(84)."""
    return b"".join(b"%d\t%d\t0\t%s\n" % (i, 1 + i // 100000, b" " * 84) for i in range(1, n + 1))


def test_sealer_switches_to_level_3_on_redundant_content_only():
    import zstandard
    redundant = _pgbench_like_rows(200_000)
    frames = [redundant[i:i + FRAME_CONTENT] for i in range(0, len(redundant), FRAME_CONTENT)]
    at_level_1 = sum(len(zstandard.ZstdCompressor(level=1).compress(f)) for f in frames)
    at_level_3 = sum(len(zstandard.ZstdCompressor(level=3).compress(f)) for f in frames)
    assert at_level_3 < at_level_1 * 0.9      # the premise: level 3 finds what level 1 misses
    s = Sealer(1)
    stored = s.feed([redundant[:5000], redundant[5000:]]) + s.finish()  # a list of pieces is joined
    assert len(stored) <= at_level_3 + 8 + 64
    assert open_bytes("f", stored, s.sha256) == redundant
    # content that compresses poorly keeps the configured level: identical to plain level 1
    noisy = os.urandom(3 << 20).hex().encode()[: 5 << 20]
    s1 = Sealer(1)
    body = s1.feed(noisy) + s1.finish()
    expected = b"".join(zstandard.ZstdCompressor(level=1).compress(noisy[i:i + FRAME_CONTENT])
                        for i in range(0, len(noisy), FRAME_CONTENT))
    assert body[8:] == expected


def test_level_hint_lets_later_files_of_a_table_start_at_level_3():
    import zstandard
    redundant = _pgbench_like_rows(60_000)
    frame = redundant[:FRAME_CONTENT]
    hint = LevelHint()
    untouched = Sealer(1, LevelHint())      # another table's hint: no effect
    assert untouched.feed(frame) == b"PGKF\x01\x01\x00\x00" + zstandard.ZstdCompressor(level=3).compress(frame)
    first = Sealer(1, hint)
    assert hint.level is None
    first.feed(frame)
    assert hint.level == 3                  # the first file found level 3 worth it ...
    second = Sealer(1, hint)                # ... so the next one starts at level 3 directly
    rest = redundant[FRAME_CONTENT:]
    at_3 = zstandard.ZstdCompressor(level=3).compress(rest)
    assert at_3 != zstandard.ZstdCompressor(level=1).compress(rest)   # the premise
    assert (second.feed(rest) + second.finish())[8:] == at_3
    # noisy content never sets the hint
    noisy_hint = LevelHint()
    Sealer(1, noisy_hint).feed(os.urandom(1 << 20).hex().encode())
    assert noisy_hint.level is None


def test_frames_are_whole_whatever_the_pieces_fed():
    """Content fed in pieces that do not line up with frames (a COPY stream's socket reads) is
    sealed as whole FRAME_CONTENT frames and one short last frame, byte for byte what sealing
    it in one call gives: no short frame in the middle of a file to compress worse."""
    content = _pgbench_like_rows(140_000)
    assert len(content) > 2 * FRAME_CONTENT
    one = Sealer(1)
    at_once = one.feed(content) + one.finish()
    pieced = Sealer(1)
    out = []
    for start in range(0, len(content), 185_000):
        out.append(pieced.feed([content[start:start + 100_000], content[start + 100_000:start + 185_000]]))
    stored = b"".join(out) + pieced.finish()
    assert stored == at_once and pieced.sha256 == one.sha256
    assert pieced.logical_size == len(content) and pieced.stored_size == len(stored)
    # a call returns something only when it completes a frame, one frame each here
    assert sum(1 for o in out if o) == len(content) // FRAME_CONTENT
    assert open_bytes("f", stored, pieced.sha256) == content


def _counter_rows(n: int) -> bytes:
    """Text COPY rows of counters, small codes and short repeated strings: redundant, but level 3
    compresses them worse than level 1."""
    return "".join(f"{g}\t{g % 100}\tstatus-{g % 5}\t2024-{1 + g // 200000:02d}-01\t{'x' * (g % 7)}\n"
                   for g in range(1, n + 1)).encode()


def test_redundant_content_that_level_3_does_not_shrink_stays_at_level_1():
    import zstandard
    frame = _counter_rows(400_000)[:FRAME_CONTENT]
    at_1 = zstandard.ZstdCompressor(level=1).compress(frame)
    at_3 = zstandard.ZstdCompressor(level=3).compress(frame)
    assert len(at_1) * 8 <= len(frame) and len(at_3) > len(at_1) * 0.9   # the premise
    hint = LevelHint()
    s = Sealer(1, hint)
    assert s.feed(frame)[8:] == at_1        # a whole frame: sealed at once
    assert hint.level == 1                  # decided once: the table's later files stay at level 1
    later = Sealer(1, hint)
    assert later.feed(frame)[8:] == at_1
