"""PIL drawings behind :mod:`capflow_core.sample_media`: a document, a UI, code, a diagram.

Each function takes a ``font(size, name)`` factory and returns an RGB image; content is
fixed, so the drawings are deterministic.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFont

FontFactory = Callable[..., ImageFont.FreeTypeFont | ImageFont.ImageFont]

DOCUMENT_TITLE = "Quarterly Operations Report"
DOCUMENT_PARAGRAPHS = (
    "The third quarter closed with steady growth across all regions. Revenue rose by "
    "twelve percent compared with the same period last year, driven mainly by the new "
    "subscription plans and a stronger presence in northern markets.",
    "Operating costs increased at a slower pace than revenue. The largest single item was "
    "the expansion of the support team, which reduced the average response time from "
    "nine hours to under four hours.",
    "Next quarter the company will focus on three priorities: improving onboarding for "
    "small teams, reducing infrastructure spending, and publishing a public roadmap.",
)

CODE = '''import json
from pathlib import Path


def load_scores(path: str) -> dict[str, float]:
    """Read per-user scores from a JSON file."""
    data = json.loads(Path(path).read_text())
    return {name: float(score) for name, score in data.items()}


def top_users(scores: dict[str, float], k: int = 3) -> list[str]:
    # Highest score first; ties keep insertion order.
    ranked = sorted(scores, key=scores.get, reverse=True)
    return ranked[:k]


if __name__ == "__main__":
    scores = load_scores("scores.json")
    for rank, user in enumerate(top_users(scores), start=1):
        print(f"{rank}. {user}: {scores[user]:.1f}")
'''


def _wrap(draw: ImageDraw.ImageDraw, text: str, fnt: ImageFont.ImageFont, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=fnt) <= width:
            line = candidate
        else:
            lines.append(line)
            line = word
    return [*lines, line] if line else lines


def document(font: FontFactory) -> Image.Image:
    """A printed report page: a title, a subtitle and three justified-left paragraphs."""
    image = Image.new("RGB", (1000, 1300), "white")
    draw = ImageDraw.Draw(image)
    draw.text((80, 80), DOCUMENT_TITLE, fill="black", font=font(44, "DejaVuSans-Bold.ttf"))
    draw.text((80, 150), "Prepared by the Finance Office", fill=(70, 70, 70), font=font(26))
    draw.line((80, 200, 920, 200), fill=(150, 150, 150), width=2)
    body, y = font(26), 240
    for paragraph in DOCUMENT_PARAGRAPHS:
        for line in _wrap(draw, paragraph, body, 840):
            draw.text((80, y), line, fill="black", font=body)
            y += 40
        y += 30
    draw.text((80, 1220), "Page 1 of 4", fill=(90, 90, 90), font=font(20))
    return image


def screenshot(font: FontFactory) -> Image.Image:
    """A desktop sign-in dialog: title bar, sidebar, two text fields, a checkbox, buttons."""
    image = Image.new("RGB", (1280, 800), (236, 239, 244))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1280, 48), fill=(45, 52, 64))
    for i, color in enumerate(((237, 106, 94), (245, 191, 79), (98, 197, 84))):
        draw.ellipse((16 + 28 * i, 16, 32 + 28 * i, 32), fill=color)
    draw.text((560, 12), "Acme Cloud Console", fill="white", font=font(22))
    draw.rectangle((0, 48, 240, 800), fill=(59, 66, 82))
    for i, item in enumerate(("Dashboard", "Projects", "Billing", "Settings", "Help")):
        if i == 3:
            draw.rectangle((0, 80 + 56 * i, 240, 124 + 56 * i), fill=(94, 129, 172))
        draw.text((32, 90 + 56 * i), item, fill="white", font=font(22))
    draw.rounded_rectangle((440, 140, 1080, 680), radius=16, fill="white", outline=(200, 200, 210))
    draw.text((480, 170), "Sign in to your account", fill=(30, 30, 30), font=font(32))
    for i, (label, value) in enumerate(
        (("Email address", "jane.doe@example.com"), ("Password", "\u2022" * 10))
    ):
        top = 250 + 120 * i
        draw.text((480, top), label, fill=(80, 80, 80), font=font(20))
        draw.rounded_rectangle(
            (480, top + 32, 1040, top + 84),
            radius=8,
            outline=(150, 160, 180),
            width=2,
            fill=(250, 250, 252),
        )
        draw.text((496, top + 44), value, fill=(30, 30, 30), font=font(22))
    draw.rectangle((480, 500, 504, 524), outline=(120, 120, 130), width=2)
    draw.text((516, 500), "Remember me", fill=(60, 60, 60), font=font(20))
    draw.rounded_rectangle((480, 570, 740, 630), radius=10, fill=(94, 129, 172))
    draw.text((566, 585), "Sign in", fill="white", font=font(24))
    draw.rounded_rectangle((780, 570, 1040, 630), radius=10, outline=(94, 129, 172), width=2)
    draw.text((860, 585), "Cancel", fill=(94, 129, 172), font=font(24))
    return image


def code_editor(font: FontFactory) -> Image.Image:
    """A dark-theme editor showing a Python file with line numbers and simple highlighting."""
    image = Image.new("RGB", (1280, 800), (30, 30, 36))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1280, 40), fill=(45, 45, 52))
    draw.rectangle((0, 0, 200, 40), fill=(30, 30, 36))
    draw.text((16, 10), "scores.py", fill=(220, 220, 220), font=font(18))
    mono = font(20, "DejaVuSansMono.ttf")
    token = re.compile(r"(#.*$|\"\"\".*?\"\"\"|f?\"[^\"]*\"|\w+|\s+|.)")
    for n, line in enumerate(CODE.splitlines(), start=1):
        y = 40 + 28 * n
        draw.text((20, y), f"{n:>3}", fill=(110, 110, 120), font=mono)
        x = 80
        for tok in token.findall(line):
            if tok.startswith("#"):
                color = (106, 153, 85)
            elif tok.startswith(('"', 'f"')):
                color = (206, 145, 120)
            elif keyword.iskeyword(tok):
                color = (197, 134, 192)
            elif tok.isdigit():
                color = (181, 206, 168)
            else:
                color = (212, 212, 212)
            draw.text((x, y), tok, fill=color, font=mono)
            x += draw.textlength(tok, font=mono)
    draw.rectangle((0, 776, 1280, 800), fill=(0, 122, 204))
    draw.text((12, 778), "Python 3.11   UTF-8   Ln 12, Col 5", fill="white", font=font(16))
    return image


def _arrow(draw: ImageDraw.ImageDraw, start: tuple[int, int], end: tuple[int, int]) -> None:
    draw.line((*start, *end), fill=(40, 40, 40), width=4)
    (x0, y0), (x1, y1) = start, end
    if x1 != x0:  # horizontal
        s = 1 if x1 > x0 else -1
        draw.polygon(((x1, y1), (x1 - 18 * s, y1 - 10), (x1 - 18 * s, y1 + 10)), fill=(40, 40, 40))
    else:
        s = 1 if y1 > y0 else -1
        draw.polygon(((x1, y1), (x1 - 10, y1 - 18 * s), (x1 + 10, y1 - 18 * s)), fill=(40, 40, 40))


def diagram(font: FontFactory) -> Image.Image:
    """A pipeline flowchart: five labelled boxes joined by arrows, with a feedback loop."""
    image = Image.new("RGB", (1200, 800), (252, 252, 250))
    draw = ImageDraw.Draw(image)
    draw.text((380, 40), "Caption data pipeline", fill=(20, 20, 20), font=font(40))
    boxes = {
        "Ingest": (80, 200),
        "Preprocess": (470, 200),
        "Caption": (860, 200),
        "Judge": (860, 520),
        "Dataset": (470, 520),
    }
    colors = ((198, 219, 239), (199, 233, 192), (253, 208, 162), (252, 187, 161), (218, 218, 235))
    label = font(28)
    for (name, (x, y)), color in zip(boxes.items(), colors, strict=True):
        draw.rounded_rectangle(
            (x, y, x + 260, y + 110), radius=14, fill=color, outline=(60, 60, 60), width=3
        )
        tw = draw.textlength(name, font=label)
        draw.text((x + 130 - tw / 2, y + 38), name, fill=(20, 20, 20), font=label)
    _arrow(draw, (340, 255), (470, 255))
    _arrow(draw, (730, 255), (860, 255))
    _arrow(draw, (990, 310), (990, 520))
    _arrow(draw, (860, 575), (730, 575))
    draw.line((1120, 575, 1150, 575, 1150, 255, 1120, 255), fill=(150, 40, 40), width=3)
    small = font(20)
    draw.text((1000, 400), "accepted", fill=(40, 40, 40), font=small)
    draw.text((1100, 640), "retry", fill=(150, 40, 40), font=small)
    draw.text(
        (80, 720),
        "Rejected captions are re-queued; accepted ones become a new version.",
        fill=(60, 60, 60),
        font=small,
    )
    return image
