"""Text detection and unified diffs."""

from __future__ import annotations

from checks.fim.diff import compress, decompress, is_text, unified


def test_is_text() -> None:
    assert is_text(b"<?php echo 'hi'; ?>\n")
    assert is_text("caf\u00e9\n".encode())
    assert is_text("caf\u00e9 latin-1\n".encode("latin-1"))  # legacy 8-bit source is text too
    assert not is_text(b"\x7fELF\x02\x01\x01\x00\x00")
    assert not is_text(bytes(range(1, 32)) * 10)
    assert is_text(b"")


def test_unified_diff_of_a_change() -> None:
    diff, truncated = unified(b"a\nb\nc\n", b"a\nB\nc\n", "/w/x.php", 10_000)
    assert not truncated
    assert diff.splitlines() == ["--- /w/x.php", "+++ /w/x.php", "@@ -1,3 +1,3 @@", " a", "-b", "+B", " c"]


def test_diff_of_a_new_file_is_against_nothing() -> None:
    diff, _ = unified(None, b"<?php system($_GET['c']); ?>\n", "/w/shell.php", 10_000)
    assert diff.startswith("--- /dev/null\n+++ /w/shell.php\n")
    assert "+<?php system($_GET['c']); ?>" in diff


def test_diff_is_cut_at_the_limit() -> None:
    old = "".join(f"line {i}\n" for i in range(1000)).encode()
    new = "".join(f"LINE {i}\n" for i in range(1000)).encode()
    diff, truncated = unified(old, new, "/w/f", 500)
    assert truncated and len(diff) <= 501


def test_identical_content_has_no_diff() -> None:
    assert unified(b"same\n", b"same\n", "/w/f", 100) == ("", False)


def test_copies_round_trip() -> None:
    data = b"x" * 10_000
    packed = compress(data)
    assert len(packed) < len(data) and decompress(packed) == data
