"""Line boxes of a PDF page from its own text layer (pdfium), as ground truth for segmentation.

pdfium's text rectangles are runs of one font, so they are grouped: runs that share a baseline
row are sorted left to right and joined where the gap between them is under the segmenter's
segment gap (in line heights). Boxes are the tight union of the glyph boxes, in render pixels.
"""

from __future__ import annotations


def pdf_line_boxes(page, dpi: int, segment_gap: float = 2.0) -> list[tuple[float, float, float, float]]:
    scale = dpi / 72.0
    _, height = page.get_size()
    tp = page.get_textpage()
    glyphs = []
    for i in range(tp.count_chars()):
        ch = tp.get_text_range(i, 1)
        if not ch or ch.isspace():
            continue
        left, bottom, right, top = tp.get_charbox(i)
        if right > left and top > bottom:
            glyphs.append(((left + right) / 2, (bottom + top) / 2, left, bottom, right, top))
    runs = []
    for j in range(tp.count_rects()):
        left, bottom, right, top = tp.get_rect(j)
        inside = [g for g in glyphs if left - 0.5 <= g[0] <= right + 0.5 and bottom - 0.5 <= g[1] <= top + 0.5]
        # a text-layer run may bridge a wide gap with spaces: split it where the ink does
        inside.sort(key=lambda g: g[2])
        piece: list = []
        for g in inside + [None]:
            if piece and g is not None:
                h = max(p[5] for p in piece) - min(p[3] for p in piece)
                if g[2] - max(p[4] for p in piece) < segment_gap * h:
                    piece.append(g)
                    continue
            if piece:
                x0, x1 = min(p[2] for p in piece), max(p[4] for p in piece)
                y0, y1 = min(p[3] for p in piece), max(p[5] for p in piece)
                runs.append([x0 * scale, (height - y1) * scale, x1 * scale, (height - y0) * scale])
            piece = [g] if g is not None else []

    # rows: runs whose vertical extents overlap by more than half the smaller height
    rows: list[list[list[float]]] = []
    for run in sorted(runs, key=lambda r: r[3] - r[1], reverse=True):
        for row in rows:
            top, bottom = min(r[1] for r in row), max(r[3] for r in row)
            overlap = min(bottom, run[3]) - max(top, run[1])
            if overlap > 0.5 * min(bottom - top, run[3] - run[1]):
                row.append(run)
                break
        else:
            rows.append([run])
    lines = []
    for row in rows:
        row.sort(key=lambda r: r[0])
        current = list(row[0])
        for run in row[1:]:
            h = max(current[3] - current[1], run[3] - run[1])
            if run[0] - current[2] < segment_gap * h:
                current = [min(current[0], run[0]), min(current[1], run[1]), max(current[2], run[2]),
                           max(current[3], run[3])]
            else:
                lines.append(tuple(current))
                current = list(run)
        lines.append(tuple(current))
    return lines


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def recall(truth, predicted, threshold: float = 0.7) -> tuple[float, list]:
    """Share of true boxes matched by a predicted box with IoU >= threshold, and the misses."""
    misses = [t for t in truth if max((iou(t, p) for p in predicted), default=0.0) < threshold]
    return (1 - len(misses) / len(truth)) if truth else 1.0, misses
