"""Plain-text presentation helpers shared by the terminal reports."""

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(size):
    """Human-readable size with binary units: 0 B, 1023 B, 1.5 KiB, 12.0 MiB."""
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def safe_text(name):
    """A name from user code (file, function), made safe for a terminal.

    Control characters (escape sequences could rewrite the screen) are shown
    as escapes; everything printable is kept as is.
    """
    text = str(name)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def table(headers, rows, align=None):
    """A fixed-width text table. ``align`` holds "<" or ">" per column."""
    align = align or ["<"] * len(headers)
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        lines.append("  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
