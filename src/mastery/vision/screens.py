"""Synthetic screenshots for "malicious screen vs benign app" classification.

Two classes, several kinds each, all drawn with Pillow from a seeded ``numpy`` generator:

* ``malicious``: ``fake_av`` (scareware "viruses detected" pop-ups), ``ransom`` (ransom notes, as a
  full-screen lock or as a text file), ``phish_login`` (credential-phishing sign-in pages);
* ``benign``: ``app`` (lists, chats, dashboards), ``signin`` (legitimate sign-in pages), ``security``
  (a real antivirus saying all is well), ``wallet`` (crypto wallets and backup tools: dark screens with
  addresses, amounts and progress bars, like ransom notes but harmless).

Benign sign-in pages and phishing pages share one layout; what separates them are cues a model
has to learn, each drawn at random: a URL whose domain does not match the brand (typosquats, IPs,
look-alike subdomains), plain ``http``, urgency banners, red warning colours, extra fields asking
for card numbers. Benign pages carry some of these too (an "incorrect password" banner in red, a
single sign-on domain), so the task is not solvable from one cue. All brands are invented.

API: :func:`render_screen` draws one screen, :func:`generate_dataset` a class-balanced set;
``CLASS_NAMES`` and ``KINDS`` name the classes and kinds. Same seed, same pixels.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("benign", "malicious")
KINDS: dict[str, tuple[str, ...]] = {
    "benign": ("app", "signin", "security", "wallet"),
    "malicious": ("fake_av", "ransom", "phish_login"),
}
KIND_LABEL: dict[str, int] = {k: CLASS_NAMES.index(c) for c, kinds in KINDS.items() for k in kinds}

_PREFIX = ("Nova", "Zen", "Lumi", "Quor", "Vexa", "Orbi", "Tali", "Kest", "Mira", "Pylo", "Sora", "Brin",
           "Cleo", "Dax", "Eon", "Fyra", "Glim", "Hale", "Ixo", "Juno", "Kora", "Levo", "Mox", "Nimb")
_SUFFIX = ("ly", "io", "bank", "mail", "cloud", "pay", "hub", "box", "net", "soft", "desk", "drive", "link")
_WORDS = ("project", "report", "meeting", "invoice", "photos", "budget", "draft", "notes", "team", "update",
          "weekly", "design", "review", "travel", "music", "order", "shipping", "account", "profile", "plan",
          "summary", "family", "recipe", "tasks", "calendar", "backup", "files", "today", "inbox", "archive")
_BRAND_COLORS = ((37, 99, 235), (13, 148, 136), (22, 163, 74), (124, 58, 237), (234, 88, 12), (71, 85, 105),
                 (2, 132, 199), (190, 24, 93), (79, 70, 229), (21, 128, 61), (180, 83, 9), (30, 64, 175))
_RED, _AMBER, _GREEN = (220, 38, 38), (245, 158, 11), (22, 163, 74)
_URGENT = ("Your account has been suspended", "Unusual sign-in activity detected", "Verify within 24 hours",
           "Action required: confirm payment", "Your password expires today", "Account locked - verify now")
_BENIGN_NOTES = ("New: sign in faster with passkeys", "We updated our privacy policy", "Welcome back",
                 "Stay signed in on this device")
_THREATS = ("Trojan.Win32.Agent", "Spyware.KeyLog.B", "Worm.AutoRun.X", "Adware.PopBar", "Rootkit.Hid.3",
            "Backdoor.RAT.Gen", "Exploit.PDF.C", "Ransom.Crypt.Z")
_TLDS = (".com", ".io", ".net", ".app")
_BAD_TLDS = (".xyz", ".top", ".ru", ".info", ".cc", ".site")


@dataclass(frozen=True)
class ScreenSet:
    """``images`` uint8 (N, size, size, 3); ``labels`` int64 (N,) indexing CLASS_NAMES; ``kinds`` (N,)."""

    images: np.ndarray
    labels: np.ndarray
    kinds: tuple[str, ...]
    class_names: tuple[str, ...] = CLASS_NAMES


@functools.lru_cache(maxsize=256)
def _font(style: str, px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu from matplotlib's data folder (identical everywhere matplotlib is), else Pillow's default."""
    names = {"regular": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf", "mono": "DejaVuSansMono.ttf"}
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / names[style]
        return ImageFont.truetype(str(path), max(px, 4))
    except (ImportError, OSError):
        return ImageFont.load_default(size=max(px, 4))


class _Canvas:
    """Drawing in fractions of the canvas side: (x, y) in [0, 1]."""

    def __init__(self, side: int, background: tuple[int, int, int]) -> None:
        self.side = side
        self.image = Image.new("RGB", (side, side), background)
        self.draw = ImageDraw.Draw(self.image)

    def px(self, v: float) -> int:
        return round(v * self.side)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: tuple[int, int, int] | None = None,
             outline: tuple[int, int, int] | None = None, radius: float = 0.0) -> None:
        box = (self.px(x0), self.px(y0), max(self.px(x1), self.px(x0) + 1), max(self.px(y1), self.px(y0) + 1))
        self.draw.rounded_rectangle(box, radius=self.px(radius), fill=fill, outline=outline,
                                    width=max(1, self.side // 224))

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, fill: tuple[int, int, int]) -> None:
        self.draw.ellipse((self.px(x0), self.px(y0), self.px(x1), self.px(y1)), fill=fill)

    def polygon(self, points: list[tuple[float, float]], fill: tuple[int, int, int]) -> None:
        self.draw.polygon([(self.px(x), self.px(y)) for x, y in points], fill=fill)

    def text(self, x: float, y: float, s: str, h: float, color: tuple[int, int, int], style: str = "regular",
             anchor: str = "la") -> None:
        self.draw.text((self.px(x), self.px(y)), s, fill=color, font=_font(style, self.px(h)), anchor=anchor)


# -- random bits -------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, options: tuple | list) -> Any:
    return options[int(rng.integers(len(options)))]


def _brand(rng: np.random.Generator) -> str:
    return _pick(rng, _PREFIX) + _pick(rng, _SUFFIX)


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(_pick(rng, _WORDS) for _ in range(n)).capitalize()


def _jitter(rng: np.random.Generator, color: tuple[int, int, int], amount: int = 18) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)  # type: ignore


def _legit_url(rng: np.random.Generator, brand: str) -> str:
    domain = brand.lower() + _pick(rng, _TLDS)
    if rng.random() < 0.12:  # single sign-on through another (invented) provider: a benign mismatch
        domain = f"sso.{_brand(rng).lower()}.com"
    return _pick(rng, ("https://accounts.{d}/signin", "https://login.{d}", "https://{d}/login")).format(d=domain)


def _phish_url(rng: np.random.Generator, brand: str) -> str:
    b = brand.lower()
    typo = b.replace("o", "0", 1) if "o" in b else b.replace("l", "1", 1) if "l" in b else b + "s"
    options = (f"{typo}.com/login", f"{b}-secure-verify{_pick(rng, _BAD_TLDS)}/account",
               f"{b}.com.account-check{_pick(rng, _BAD_TLDS)}/signin",
               f"{rng.integers(11, 223)}.{rng.integers(0, 255)}.{rng.integers(0, 255)}.{rng.integers(1, 254)}/{b}/",
               f"{_pick(rng, _WORDS)}-{_pick(rng, _WORDS)}{_pick(rng, _BAD_TLDS)}/{b}/login.php",
               f"login.{b}{_pick(rng, _TLDS)}")  # the last one looks legitimate: other cues must carry it
    return ("http://" if rng.random() < 0.5 else "https://") + _pick(rng, options)


def _chrome(c: _Canvas, rng: np.random.Generator, url: str | None, title: str) -> float:
    """A window title bar, plus an address bar when ``url`` is given; returns where content starts."""
    dark = rng.random() < 0.3
    bar = (45, 45, 50) if dark else _jitter(rng, (226, 229, 234), 8)
    c.rect(0, 0, 1, 0.07, fill=bar)
    if rng.random() < 0.5:  # macOS-like buttons on the left
        for i, col in enumerate(((255, 95, 86), (255, 189, 46), (39, 201, 63))):
            c.ellipse(0.02 + 0.04 * i, 0.02, 0.045 + 0.04 * i, 0.045, fill=col)
        c.text(0.16, 0.018, title[:28], 0.035, (220, 220, 220) if dark else (60, 60, 60))
    else:  # Windows-like buttons on the right
        c.text(0.03, 0.018, title[:28], 0.035, (220, 220, 220) if dark else (60, 60, 60))
        for i in range(3):
            c.rect(0.82 + 0.06 * i, 0.022, 0.85 + 0.06 * i, 0.05, outline=(150, 150, 150))
    if url is None:
        return 0.07
    c.rect(0, 0.07, 1, 0.13, fill=(245, 246, 248))
    c.rect(0.03, 0.08, 0.97, 0.12, fill=(255, 255, 255), outline=(200, 200, 205), radius=0.02)
    secure = url.startswith("https://")
    c.text(0.05, 0.085, "\u25cf" if secure else "\u26a0", 0.028, (100, 100, 100) if secure else _RED)
    shown = url.split("://", 1)[1]
    c.text(0.09, 0.085, ("" if secure else "Not secure | ") + shown[:46], 0.026, (40, 40, 40))
    return 0.13


def _logo(c: _Canvas, rng: np.random.Generator, x: float, y: float, brand: str, color: tuple[int, int, int],
          h: float) -> None:
    if rng.random() < 0.5:
        c.ellipse(x, y, x + h, y + h, fill=color)
    else:
        c.rect(x, y, x + h, y + h, fill=color, radius=h / 4)
    c.text(x + h / 2, y + h / 2, brand[0], h * 0.7, (255, 255, 255), "bold", anchor="mm")
    c.text(x + h * 1.25, y + h * 0.15, brand, h * 0.7, (30, 30, 30), "bold")


def _login_form(c: _Canvas, rng: np.random.Generator, top: float, brand: str, color: tuple[int, int, int],
                fields: list[str], button: str, banner: tuple[str, tuple[int, int, int]] | None) -> None:
    x0, x1 = rng.uniform(0.08, 0.25), rng.uniform(0.75, 0.92)
    y = top + rng.uniform(0.03, 0.08)
    _logo(c, rng, x0, y, brand, color, rng.uniform(0.05, 0.07))
    y += 0.1
    c.text(x0, y, _pick(rng, ("Sign in", f"Sign in to {brand}", "Log in", "Welcome back")), 0.045,
           (20, 20, 20), "bold")
    y += 0.07
    if banner is not None:
        text, col = banner
        c.rect(x0, y, x1, y + 0.06, fill=tuple(int(v * 0.25 + 255 * 0.75) for v in col), outline=col, radius=0.01)
        c.text(x0 + 0.02, y + 0.015, text[:40], 0.028, col, "bold")
        y += 0.08
    for name in fields:
        c.text(x0, y, name, 0.028, (80, 80, 80))
        c.rect(x0, y + 0.035, x1, y + 0.085, fill=(255, 255, 255), outline=(180, 180, 185), radius=0.01)
        y += 0.1
    c.rect(x0, y + 0.01, x1, y + 0.07, fill=color, radius=0.015)
    c.text((x0 + x1) / 2, y + 0.04, button, 0.032, (255, 255, 255), "bold", anchor="mm")
    c.text(x0, y + 0.1, _pick(rng, ("Forgot password?", "Create account", "Need help?")), 0.026, color)


def _signin(c: _Canvas, rng: np.random.Generator, phishing: bool) -> None:
    brand = _brand(rng)
    color = _jitter(rng, _pick(rng, _BRAND_COLORS))
    fields = [_pick(rng, ("Email", "Username", "Email or phone")), "Password"]
    banner = None
    button = _pick(rng, ("Sign in", "Next", "Continue"))
    if phishing:
        url = _phish_url(rng, brand)
        cues = rng.random(4) < (0.6, 0.35, 0.35, 0.4)  # urgency banner, extra fields, red theme, odd button
        if cues[0]:
            banner = (_pick(rng, _URGENT), _RED if rng.random() < 0.7 else _AMBER)
        if cues[1]:
            fields += list(rng.choice(["Card number", "Expiry / CVV", "SSN", "Phone PIN", "Email password"],
                                      size=int(rng.integers(1, 3)), replace=False))
        if cues[2]:
            color = _jitter(rng, _RED, 25)
        if cues[3]:
            button = _pick(rng, ("Verify now", "Unlock account", "Confirm identity"))
    else:
        url = _legit_url(rng, brand)
        u = rng.random()
        if u < 0.08:
            banner = ("Incorrect password. Try again.", _RED)  # a benign red banner
        elif u < 0.3:
            banner = (_pick(rng, _BENIGN_NOTES), _pick(rng, ((37, 99, 235), _AMBER, _GREEN)))
    top = _chrome(c, rng, url, f"{brand} - Sign in")
    _login_form(c, rng, top, brand, color, fields[:5], button, banner)


def _app(c: _Canvas, rng: np.random.Generator) -> None:
    if rng.random() < 0.2:  # a plain text file in an editor (ransom notes can look like this too)
        top = _chrome(c, rng, None, f"{_pick(rng, _WORDS)}_{_pick(rng, _WORDS)}.txt - Notepad")
        for i in range(int(rng.integers(5, 11))):
            c.text(0.04, top + 0.04 + 0.075 * i, _words(rng, int(rng.integers(1, 6))), 0.032, (0, 0, 0), "mono")
        return
    brand = _brand(rng)
    color = _jitter(rng, _pick(rng, _BRAND_COLORS))
    top = _chrome(c, rng, f"https://app.{brand.lower()}.com" if rng.random() < 0.5 else None, brand)
    c.rect(0, top, 1, top + 0.08, fill=color)
    c.text(0.04, top + 0.02, brand, 0.04, (255, 255, 255), "bold")
    side = rng.random() < 0.5
    x0 = 0.22 if side else 0.04
    if side:
        c.rect(0, top + 0.08, 0.18, 1, fill=(243, 244, 246))
        for i in range(6):
            c.text(0.03, top + 0.12 + 0.07 * i, _pick(rng, _WORDS).capitalize(), 0.028, (70, 70, 70))
    layout = int(rng.integers(3))
    y = top + 0.12
    for i in range(int(rng.integers(4, 8))):
        if layout == 0:  # list rows with an avatar
            c.ellipse(x0, y, x0 + 0.06, y + 0.06, fill=_jitter(rng, _pick(rng, _BRAND_COLORS), 40))
            c.text(x0 + 0.08, y, _words(rng, 2), 0.03, (30, 30, 30), "bold")
            c.text(x0 + 0.08, y + 0.035, _words(rng, 4), 0.024, (110, 110, 110))
            y += 0.11
        elif layout == 1:  # chat bubbles
            mine = rng.random() < 0.5
            w = rng.uniform(0.3, 0.55)
            bx = 0.95 - w if mine else x0
            c.rect(bx, y, bx + w, y + 0.07, fill=color if mine else (229, 231, 235), radius=0.025)
            c.text(bx + 0.02, y + 0.02, _words(rng, 3), 0.026, (255, 255, 255) if mine else (30, 30, 30))
            y += 0.1
        else:  # dashboard cards with a bar chart
            if i >= 4:
                break
            cx, cy = x0 + (i % 2) * 0.37, top + 0.12 + (i // 2) * 0.4
            c.rect(cx, cy, cx + 0.34, cy + 0.36, fill=(250, 250, 252), outline=(220, 220, 225), radius=0.02)
            c.text(cx + 0.02, cy + 0.02, _words(rng, 1), 0.03, (50, 50, 50), "bold")
            for j in range(5):
                hgt = rng.uniform(0.04, 0.22)
                c.rect(cx + 0.03 + j * 0.06, cy + 0.32 - hgt, cx + 0.07 + j * 0.06, cy + 0.32, fill=color)


def _security(c: _Canvas, rng: np.random.Generator, fake: bool) -> None:
    brand = _pick(rng, ("Shield", "Guard", "Defender", "Secure", "Protect")) + _pick(rng, ("ly", "io", "X", "Pro"))
    url = None
    if fake and rng.random() < 0.5:  # scareware served as a web page
        url = f"http://{_pick(rng, _WORDS)}-{_pick(rng, _WORDS)}{_pick(rng, _BAD_TLDS)}/scan"
    top = _chrome(c, rng, url, f"{brand} Antivirus")
    n = int(rng.integers(3, 28)) if fake else 0
    attention = not fake and rng.random() < 0.2  # a real warning: one item needs attention (amber)
    col = (_jitter(rng, _RED, 20) if rng.random() < 0.8 else _AMBER) if fake else (_AMBER if attention else _GREEN)
    c.rect(0, top, 1, top + 0.25, fill=col)
    shield = [(0.1, top + 0.04), (0.2, top + 0.04), (0.2, top + 0.13), (0.15, top + 0.2), (0.1, top + 0.13)]
    if fake and rng.random() < 0.6:  # warning triangle instead of a shield
        shield = [(0.15, top + 0.03), (0.22, top + 0.2), (0.08, top + 0.2)]
    c.polygon(shield, fill=(255, 255, 255))
    c.text(0.15, top + 0.12, "!" if fake or attention else "\u2713", 0.07, col, "bold", anchor="mm")
    head = (f"WARNING! {n} threats found" if rng.random() < 0.6 else "Your PC is infected!") if fake else \
        ("1 item needs attention" if attention else _pick(rng, ("You're protected", "No threats found")))
    c.text(0.27, top + 0.06, head, 0.045, (255, 255, 255), "bold")
    c.text(0.27, top + 0.14, "Last scan: today" if not fake else "Act now to avoid data loss", 0.03,
           (255, 255, 255))
    y = top + 0.3
    for _ in range(int(rng.integers(3, 6))):
        if fake:
            c.text(0.06, y, f"\u26a0 {_pick(rng, _THREATS)}", 0.03, _RED, "mono")
            c.text(0.7, y, _pick(rng, ("High", "Critical", "Severe")), 0.03, _RED, "bold")
        else:
            c.text(0.06, y, _pick(rng, ("Real-time protection", "Firewall", "Web shield", "Updates")), 0.03,
                   (50, 50, 50))
            c.rect(0.78, y, 0.88, y + 0.04, fill=_GREEN, radius=0.02)
        y += 0.07
    if fake:
        c.rect(0.06, y, 0.94, y + 0.03, fill=(230, 230, 230))
        c.rect(0.06, y, 0.06 + 0.88 * rng.uniform(0.3, 1.0), y + 0.03, fill=col)
        label = _pick(rng, ("Remove all threats", f"Call support: +1-8{rng.integers(10, 99)}-{rng.integers(100, 999)}",
                            "Activate protection ($49.99)"))
        c.rect(0.15, y + 0.07, 0.85, y + 0.14, fill=col, radius=0.015)
        c.text(0.5, y + 0.105, label, 0.03, (255, 255, 255), "bold", anchor="mm")
    else:
        c.rect(0.3, y + 0.05, 0.7, y + 0.12, fill=(37, 99, 235), radius=0.015)
        c.text(0.5, y + 0.085, "Run quick scan", 0.03, (255, 255, 255), "bold", anchor="mm")


def _address(rng: np.random.Generator) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    return "bc1q" + "".join(_pick(rng, alphabet) for _ in range(26))


def _dark_screen(c: _Canvas, rng: np.random.Generator, ransom: bool) -> None:
    """Ransom notes (malicious) and wallets/backups (benign): both dark, with addresses, amounts, timers."""
    if ransom and rng.random() < 0.3:  # a ransom note opened in a text editor: white, monospace
        c.rect(0, 0, 1, 1, fill=(255, 255, 255))
        top = _chrome(c, rng, None, "README_DECRYPT.txt - Notepad")
        lines = ("ALL YOUR FILES ARE ENCRYPTED", "", "Your documents, photos and databases", "were encrypted.",
                 f"Send {rng.uniform(0.1, 2):.2f} BTC to:", _address(rng), "", "After payment you get the key.",
                 f"Deadline: {rng.integers(24, 96)} hours", "Do not rename files.")
        for i, line in enumerate(lines):
            c.text(0.04, top + 0.04 + 0.075 * i, line, 0.032, (0, 0, 0), "mono")
        return
    bg = _jitter(rng, _pick(rng, ((120, 10, 10), (15, 15, 20), (20, 25, 60))) if ransom else
                 _pick(rng, ((15, 15, 20), (20, 25, 60), (24, 32, 44), (30, 30, 38))), 12)
    c.rect(0, 0, 1, 1, fill=bg)
    top = _chrome(c, rng, None, _pick(rng, ("WanaDecryptor", "Locked", "CryptoLock")) if ransom else _brand(rng))
    accent = _jitter(rng, _pick(rng, (_RED, (250, 204, 21), (255, 255, 255))) if ransom else
                     _pick(rng, _BRAND_COLORS), 20)
    c.rect(0.08, top + 0.06, 0.2, top + 0.16, fill=accent, radius=0.02)  # a lock or a wallet icon
    if ransom:  # the shackle of a padlock
        c.ellipse(0.105, top + 0.02, 0.175, top + 0.1, fill=bg)
    if ransom:
        c.text(0.25, top + 0.05, _pick(rng, ("Your files have been encrypted!", "Oops, your files are locked",
                                             "YOUR PC IS LOCKED")), 0.042, accent, "bold")
        for i in range(int(rng.integers(3, 6))):
            c.text(0.08, top + 0.22 + 0.055 * i, _words(rng, 6), 0.026, (230, 230, 230))
        y = top + 0.55
        c.text(0.08, y, "Time left", 0.03, (230, 230, 230))
        c.text(0.08, y + 0.04, f"{rng.integers(0, 96):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}",
               0.07, accent, "mono")
        c.text(0.08, y + 0.14, f"Send {rng.uniform(0.1, 2):.2f} BTC to this address:", 0.028, (230, 230, 230))
        c.text(0.08, y + 0.19, _address(rng), 0.026, (255, 255, 255), "mono")
        c.rect(0.08, y + 0.25, 0.45, y + 0.31, fill=accent, radius=0.01)
        c.text(0.265, y + 0.28, _pick(rng, ("Check payment", "Decrypt")), 0.028, bg, "bold", anchor="mm")
        return
    if rng.random() < 0.5:  # wallet
        c.text(0.25, top + 0.05, "Balance", 0.03, (180, 180, 190))
        c.text(0.25, top + 0.09, f"{rng.uniform(0.001, 3):.4f} BTC", 0.055, (255, 255, 255), "bold")
        c.text(0.08, top + 0.22, "Your address", 0.026, (180, 180, 190))
        c.text(0.08, top + 0.26, _address(rng), 0.026, (255, 255, 255), "mono")
        for i, lab in enumerate(("Send", "Receive")):
            c.rect(0.08 + 0.3 * i, top + 0.33, 0.34 + 0.3 * i, top + 0.4, fill=accent, radius=0.02)
            c.text(0.21 + 0.3 * i, top + 0.365, lab, 0.03, (255, 255, 255), "bold", anchor="mm")
        for i in range(int(rng.integers(3, 6))):
            y = top + 0.46 + 0.08 * i
            c.text(0.08, y, _words(rng, 2), 0.026, (220, 220, 225))
            c.text(0.92, y, f"{rng.choice(['+', '-'])}{rng.uniform(0.001, 0.5):.4f}", 0.026,
                   _GREEN if rng.random() < 0.5 else (248, 113, 113), "mono", anchor="ra")
    else:  # backup / update in progress, with a countdown of its own
        c.text(0.25, top + 0.06, _pick(rng, ("Backing up your files", "Installing updates", "Syncing library")),
               0.04, (255, 255, 255), "bold")
        done = rng.uniform(0.05, 0.95)
        c.rect(0.08, top + 0.25, 0.92, top + 0.29, fill=(60, 60, 70), radius=0.02)
        c.rect(0.08, top + 0.25, 0.08 + 0.84 * done, top + 0.29, fill=accent, radius=0.02)
        c.text(0.08, top + 0.32, f"{done:.0%} - time remaining {rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}",
               0.03, (220, 220, 225))
        for i in range(int(rng.integers(3, 6))):
            name = f"{_pick(rng, _WORDS)}_{rng.integers(1, 99)}.{_pick(rng, ('jpg', 'docx', 'pdf'))}"
            c.text(0.08, top + 0.42 + 0.06 * i, name, 0.026, (200, 200, 210), "mono")


def render_screen(kind: str, rng: np.random.Generator, size: int = 224) -> Image.Image:
    """One RGB ``size`` x ``size`` screenshot of ``kind`` (see ``KINDS``), drawn from ``rng``.

    The window is drawn at twice the size, placed at a random position and scale on a random desktop
    colour, and downsampled with a Lanczos filter (anti-aliased text and edges).
    """
    if kind not in KIND_LABEL:
        raise ValueError(f"unknown screen kind {kind!r}; choose from {', '.join(KIND_LABEL)}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    side = 2 * size
    c = _Canvas(side, (255, 255, 255) if kind not in ("wallet", "ransom") else (0, 0, 0))
    if kind in ("signin", "phish_login"):
        _signin(c, rng, phishing=kind == "phish_login")
    elif kind == "app":
        _app(c, rng)
    elif kind in ("security", "fake_av"):
        _security(c, rng, fake=kind == "fake_av")
    else:
        _dark_screen(c, rng, ransom=kind == "ransom")
    scale = rng.uniform(0.8, 1.0)  # the window covers 80-100% of the screen, the rest is desktop
    desktop = Image.new("RGB", (side, side), _jitter(rng, _pick(rng, ((30, 60, 110), (60, 60, 70), (0, 120, 150),
                                                                       (110, 80, 140))), 25))
    w = int(side * scale)
    window = c.image.resize((w, w), Image.Resampling.BILINEAR)
    desktop.paste(window, (int(rng.integers(0, side - w + 1)), int(rng.integers(0, side - w + 1))))
    return desktop.resize((size, size), Image.Resampling.LANCZOS)


def generate_dataset(n_per_class: int, seed: int = 0, size: int = 224) -> ScreenSet:
    """``n_per_class`` screens of each class, kinds in turn within a class, shuffled with ``seed``.

    Screen i of class c is drawn from its own generator, seeded by (seed, c, i): the same seed gives
    the same pixels, and a bigger ``n_per_class`` only adds screens.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    images, labels, kinds = [], [], []
    for label, name in enumerate(CLASS_NAMES):
        for i in range(n_per_class):
            kind = KINDS[name][i % len(KINDS[name])]
            rng = np.random.default_rng([seed, label, i])
            images.append(np.asarray(render_screen(kind, rng, size), dtype=np.uint8))  # (size, size, 3)
            labels.append(label)
            kinds.append(kind)
    order = np.random.default_rng([seed, 99]).permutation(len(labels))
    log.info("generated %d screens (%d per class) at %d px", len(labels), n_per_class, size)
    return ScreenSet(images=np.stack(images)[order], labels=np.asarray(labels, dtype=np.int64)[order],
                     kinds=tuple(kinds[i] for i in order))
