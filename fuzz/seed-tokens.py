#!/usr/bin/env python3
"""Writes the token target's seed corpus: tokens in Herald's format (src/token.rs)
signed with the fuzz target's fixed keys, plus near misses. Run from fuzz/."""
import base64, hashlib, hmac, os

KEY, OLD_KEY = b"fuzz-key-0123456789abcdef", b"old-fuzz-key-0123456789"


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def token(purpose, delivery, customer, link=None, key=KEY, raw_ids=None):
    payload = purpose + (raw_ids if raw_ids is not None else varint(delivery) + varint(customer))
    if link is not None:
        payload += varint(link[0]) + link[1].encode()
    mac = hmac.new(key, b"herald-token-v1" + payload, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()


seeds = {
    "open": token(b"o", 1, 2),
    "open-old-key": token(b"o", 7, 9, key=OLD_KEY),
    "open-preview": token(b"o", 0, 2**64 - 1),
    "click": token(b"c", 123456, 42, (3, "https://shop.example/sale?x=1&utm_source=herald")),
    "click-unicode": token(b"c", 5, 6, (2**32 - 1, "https://exämple.example/ü?q=✓")),
    "click-empty-url": token(b"c", 5, 6, (0, "")),
    "unsubscribe": token(b"u", 300, 301),
    # Genuine MACs over payloads Herald never issues: verify must still be total.
    "open-with-link": token(b"o", 1, 2, (1, "https://x.example")),
    "open-long-varint": token(b"o", 0, 0, raw_ids=b"\x80\x00\x00"),
    "click-index-overflow": token(b"c", 1, 2, raw_ids=b"\x01\x02\xff\xff\xff\xff\x7f"),
    "unknown-purpose": token(b"x", 1, 2),
    "unknown-key": token(b"o", 1, 2, key=b"some-other-key-0123456789"),
}
seeds["tampered"] = seeds["open"][:-3] + ("A" if seeds["open"][-3] != "A" else "B") + seeds["open"][-2:]
seeds["truncated"] = seeds["click"][:20]
seeds["padded"] = seeds["unsubscribe"] + "=="

os.makedirs("corpus/token", exist_ok=True)
for name, text in seeds.items():
    with open(f"corpus/token/{name}", "w") as f:
        f.write(text)
