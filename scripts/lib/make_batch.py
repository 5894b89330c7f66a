"""Writes a sample batch: input.csv and real PNG images (a gradient with a stripe per row).

usage: make_batch.py DIR ROWS [IMAGE_BYTES]
IMAGE_BYTES pads each image with random bytes in a PNG ancillary chunk, so its size is realistic.
"""
import os, struct, sys, zlib

def png(width, height, shade, pad=0):
    raw = b"".join(b"\x00" + bytes(((x + y + shade) % 256) for x in range(width)) for y in range(height))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    if pad > 0:
        out += chunk(b"raNd", os.urandom(pad))
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")

def main():
    root, rows = sys.argv[1], int(sys.argv[2])
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    lines = ["workflowDefinitionKey,customerInternalReference,frontImage,backImage,faceImage,"
             "userConsentUserIp,userConsentUserLocationCountry,userConsentConsentObtained,userConsentConsentObtainedAt"]
    for i in range(1, rows + 1):
        names = []
        for k, side in enumerate(("front", "back", "face")):
            name = f"images/{i:05d}.{side}.png"
            base = png(64, 40, i * 7 + k * 50)
            with open(os.path.join(root, name), "wb") as f:
                f.write(png(64, 40, i * 7 + k * 50, max(0, size - len(base) - 12)))
            names.append(name)
        lines.append(f"10015,demo-{i:05d},{names[0]},{names[1]},{names[2]},203.0.113.{i % 250},USA,yes,2026-11-23T09:00:00Z")
    with open(os.path.join(root, "input.csv"), "w", newline="") as f:
        f.write("\r\n".join(lines) + "\r\n")

main()
