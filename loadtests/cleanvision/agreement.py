"""Agreement of `trustmesh check` with CleanVision 0.3.x on the image issue types both have.

Usage: python agreement.py --trustmesh BIN --work DIR [--fixtures DIR] [--generated N] [--seed S]

For each image set (the committed fixtures, and N images generated here with PIL, a generator
independent of trustmesh's own), the set is copied into DIR/<set>/images (files PIL cannot decode
are left out, CleanVision would fail on them, and so are files of extensions CleanVision does not
read, such as BMP), zipped for `trustmesh check --data`, and given to
CleanVision's Imagelab. Per issue type it prints how many images both flag, only trustmesh, only
CleanVision, neither, the agreement (%) and Cohen's kappa, and, for the generated set, each tool's
recall and precision against the planted issues.
"""

import argparse
import csv
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image, ImageFilter

# trustmesh name -> CleanVision name.
TYPES = {
    "dark": "dark",
    "light": "light",
    "blurry": "blurry",
    "low_information": "low_information",
    "odd_aspect_ratio": "odd_aspect_ratio",
    "odd_size": "odd_size",
    "grayscale": "grayscale",
    "exact_duplicate": "exact_duplicates",
    "near_duplicate": "near_duplicates",
}


# ---------------------------------------------------------------------------------------------
# The generated set: photo-like pictures (smooth colour field, shapes, noise) with planted issues.


def picture(rng, w, h, lo=20, hi=235, noise=18.0):
    """A colourful textured picture as an RGB uint8 array."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = (xs + 0.5) / w, (ys + 0.5) / h
    a, b = rng.uniform(lo, hi, 3), rng.uniform(lo, hi, 3)
    angle = rng.uniform(0, 2 * math.pi)
    t = ((u - 0.5) * math.cos(angle) + (v - 0.5) * math.sin(angle) + 0.71) / 1.42
    img = a[None, None, :] + (b - a)[None, None, :] * t[..., None]
    for _ in range(rng.integers(10, 30)):
        cx, cy = rng.uniform(0, 1, 2)
        rx, ry = rng.uniform(0.03, 0.2, 2)
        ex, ey = (u - cx) / rx, (v - cy) / ry
        inside = (ex**2 + ey**2 <= 1) if rng.integers(2) else ((abs(ex) <= 1) & (abs(ey) <= 1))
        c0, c1 = rng.uniform(lo, hi, 3), rng.uniform(lo, hi, 3)
        s = np.clip((ex + 1) / 2, 0, 1)[..., None]
        img = np.where(inside[..., None], c0 + (c1 - c0) * s, img)
    if noise == 0:
        return np.clip(img, 0, 255).astype(np.uint8)
    coarse = rng.uniform(-noise, noise, (24, 24, 3))
    grain = np.asarray(
        Image.fromarray(((coarse + noise) * 255 / (2 * noise)).astype(np.uint8)).resize(
            (w, h), Image.NEAREST
        ),
        dtype=np.float64,
    ) * (2 * noise) / 255 - noise
    img = img + grain + rng.uniform(-noise / 2, noise / 2, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img, fmt="PNG", **kw):
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def generate(n, seed):
    """About `n` images: (relative path, bytes, planted types). Classes alternate a/b."""
    rng = np.random.default_rng(seed)
    out = []

    def push(kind, data, ext, planted):
        i = len(out)
        out.append((f"{'ab'[i % 2]}/{i:04d}_{kind}.{ext}", data, planted))

    def size():
        return int(rng.integers(48, 97)), int(rng.integers(48, 97))

    share = max(1, n // 20)
    clean = n - 11 * share
    for _ in range(clean):
        push("clean", encode(Image.fromarray(picture(rng, *size()))), "png", [])
    for _ in range(share):
        factor = rng.uniform(0.08, 0.22)
        img = (picture(rng, *size()) * factor).astype(np.uint8)
        push("dark", encode(Image.fromarray(img)), "png", ["dark"])
    for _ in range(share):
        img = picture(rng, *size(), lo=0, hi=255, noise=0)
        img = (243 + img.astype(np.float64) * 12 / 255).astype(np.uint8)
        push("light", encode(Image.fromarray(img)), "png", ["light"])
    for _ in range(share):
        img = Image.fromarray(picture(rng, *size())).filter(
            ImageFilter.GaussianBlur(rng.uniform(2.0, 4.0))
        )
        push("blurred", encode(img), "png", ["blurry"])
    for _ in range(share):
        w, h = size()
        cols = rng.uniform(60, 200, (2, 3))
        cells = rng.integers(2, size=(4, 4))
        ys, xs = np.mgrid[0:h, 0:w]
        img = cols[cells[ys * 4 // h, xs * 4 // w]].astype(np.uint8)
        push("flat", encode(Image.fromarray(img)), "png", ["low_information"])
    for i in range(share):
        long, short = int(rng.integers(80, 97)), int(rng.integers(18, 28))
        w, h = (long, short) if i % 2 == 0 else (short, long)
        push("stretched", encode(Image.fromarray(picture(rng, w, h))), "png", ["odd_aspect_ratio"])
    for i in range(share):
        side = int(rng.integers(6, 10)) if i % 2 == 0 else int(rng.integers(400, 440))
        img = Image.fromarray(picture(rng, side, side))
        push("tiny" if i % 2 == 0 else "huge", encode(img, "JPEG", quality=90), "jpg", ["odd_size"])
    for i in range(share):
        grey = Image.fromarray(picture(rng, *size())).convert("L")
        # Half grey files (mode L), half RGB files of grey pixels.
        img = grey if i % 2 == 0 else grey.convert("RGB")
        push("grey", encode(img), "png", ["grayscale"])
    for _ in range(share):
        data = encode(Image.fromarray(picture(rng, *size())))
        push("original", data, "png", ["exact_duplicate"])
        push("copy", data, "png", ["exact_duplicate"])
    for i in range(share):
        img = Image.fromarray(picture(rng, *size()))
        push("source", encode(img), "png", ["near_duplicate"])
        if i % 2 == 0:
            copy = encode(img, "JPEG", quality=80)
        else:
            copy = encode(img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.BILINEAR), "JPEG", quality=85)
        push("reencoded", copy, "jpg", ["near_duplicate"])
    return out


# ---------------------------------------------------------------------------------------------


def decodable(data):
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return True
    except Exception:  # noqa: BLE001 - any PIL failure means "not an image" here
        return False


# The files CleanVision's Imagelab(data_path=...) reads (no BMP).
CLEANVISION_EXTENSIONS = (".jpg", ".jpeg", ".gif", ".jp2", ".png", ".tiff", ".webp")


def materialize(files, root):
    """Writes the files both tools read (decodable, an extension CleanVision reads) under
    root/images and zips them; returns (kept paths, zip)."""
    images = os.path.join(root, "images")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(images)
    archive = os.path.join(root, "images.zip")
    kept = []
    with zipfile.ZipFile(archive, "w") as z:
        for rel, data, _ in files:
            if not decodable(data) or not rel.lower().endswith(CLEANVISION_EXTENSIONS):
                continue
            path = os.path.join(images, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            z.writestr(rel, data)
            kept.append(rel)
    return kept, archive


def run_trustmesh(binary, archive, root):
    rows = os.path.join(root, "trustmesh_rows.csv")
    summary = os.path.join(root, "trustmesh_summary.json")
    subprocess.run(
        [binary, "check", "--data", archive, "--out", rows, "--summary", summary],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    flags = {}
    with open(rows, newline="") as f:
        for r in csv.DictReader(f):
            flags[r["path"]] = {t: r[f"is_{t}_issue"] == "True" for t in TYPES}
    with open(summary) as f:
        seconds = sum(json.load(f)["timings_ms"].values()) / 1e3
    return flags, seconds


def run_cleanvision(root):
    import time

    from cleanvision import Imagelab

    images = os.path.join(root, "images")
    start = time.perf_counter()
    lab = Imagelab(data_path=images)
    lab.find_issues(verbose=False)
    seconds = time.perf_counter() - start
    flags = {}
    for path, r in lab.issues.iterrows():
        rel = os.path.relpath(path, images).replace(os.sep, "/")
        flags[rel] = {t: bool(r[f"is_{cv}_issue"]) for t, cv in TYPES.items()}
    return flags, seconds


def kappa(both, ours, theirs, neither):
    n = both + ours + theirs + neither
    po = (both + neither) / n
    pe = ((both + ours) * (both + theirs) + (theirs + neither) * (ours + neither)) / (n * n)
    if pe == 1:
        return float("nan")
    return (po - pe) / (1 - pe)


def report(name, kept, ours, theirs, planted=None):
    print(f"\n## {name}: {len(kept)} images")
    head = f"{'type':<18}{'both':>6}{'only tm':>9}{'only cv':>9}{'neither':>9}{'agree %':>9}{'kappa':>8}"
    if planted is not None:
        head += f"{'planted':>9}{'tm R/P':>13}{'cv R/P':>13}"
    print(head)
    rows = []
    for t in TYPES:
        a = [ours[p][t] for p in kept]
        b = [theirs[p][t] for p in kept]
        both = sum(x and y for x, y in zip(a, b))
        only_ours = sum(x and not y for x, y in zip(a, b))
        only_theirs = sum(y and not x for x, y in zip(a, b))
        neither = len(kept) - both - only_ours - only_theirs
        k = kappa(both, only_ours, only_theirs, neither)
        line = (
            f"{t:<18}{both:>6}{only_ours:>9}{only_theirs:>9}{neither:>9}"
            f"{100 * (both + neither) / len(kept):>9.1f}{k:>8.3f}"
        )
        row = {"type": t, "both": both, "only_trustmesh": only_ours,
               "only_cleanvision": only_theirs, "neither": neither, "kappa": k}
        if planted is not None:
            truth = [t in planted[p] for p in kept]

            def rp(flags):
                tp = sum(f and g for f, g in zip(flags, truth))
                recall = tp / max(1, sum(truth))
                precision = tp / sum(flags) if any(flags) else float("nan")
                return recall, precision

            (r1, p1), (r2, p2) = rp(a), rp(b)
            line += f"{sum(truth):>9}{r1:>7.2f}/{p1:.2f}{r2:>7.2f}/{p2:.2f}"
            row.update(planted=sum(truth), trustmesh_recall=r1, trustmesh_precision=p1,
                       cleanvision_recall=r2, cleanvision_precision=p2)
        print(line)
        rows.append(row)
    disagreements = {}
    for t in TYPES:
        diff = [p for p in kept if ours[p][t] != theirs[p][t]]
        if diff:
            disagreements[t] = [
                f"{p} ({'tm' if ours[p][t] else 'cv'})" for p in diff[:8]
            ]
    for t, paths in disagreements.items():
        print(f"  {t} disagree on: {', '.join(paths)}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trustmesh", required=True, help="the trustmesh binary")
    parser.add_argument("--work", required=True, help="a scratch directory")
    parser.add_argument("--fixtures", help="the committed fixtures (images/<class>/<file>)")
    parser.add_argument("--generated", type=int, default=600, help="images to generate (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    results = {}
    sets = []
    if args.fixtures:
        files = []
        for cls in sorted(os.listdir(args.fixtures)):
            for name in sorted(os.listdir(os.path.join(args.fixtures, cls))):
                with open(os.path.join(args.fixtures, cls, name), "rb") as f:
                    files.append((f"{cls}/{name}", f.read(), []))
        sets.append(("fixtures", files, None))
    if args.generated:
        files = generate(args.generated, args.seed)
        sets.append(("generated", files, {rel: planted for rel, _, planted in files}))
    random.seed(args.seed)
    for name, files, planted in sets:
        root = os.path.join(args.work, name)
        kept, archive = materialize(files, root)
        print(f"\n{name}: {len(files)} files, {len(files) - len(kept)} left out (not decodable, or BMP)")
        ours, tm_seconds = run_trustmesh(args.trustmesh, archive, root)
        theirs, cv_seconds = run_cleanvision(root)
        rows = report(name, kept, ours, theirs, planted)
        print(f"  time: trustmesh check {tm_seconds:.1f} s (all stages, label/outlier models "
              f"included), CleanVision find_issues {cv_seconds:.1f} s")
        results[name] = {"images": len(kept), "types": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
