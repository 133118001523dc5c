"""Rebuild page.html - the page `dvc plots show` / `dvc plots diff` fill - from the npm tarballs
of vega, vega-lite and vega-embed, inlining their browser builds so the charts draw offline.

    npm pack vega@5 vega-lite@5 vega-embed@6        # three .tgz files, from the npm registry
    python .dvc/plots/build_page.py vega-*.tgz vega-lite-*.tgz vega-embed-*.tgz

Writes, beside this script: page.html, vendor.json (what is inlined: package, version, licence,
the file's sha256 and the tarball's npm integrity, to check against `npm view PKG@VER
dist.integrity`), and LICENSE.<package> where the tarball ships one (vega's does not: LICENSE.vega
is kept by hand, from the vega repository). The libraries go in unchanged, byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("vega", "vega-lite", "vega-embed")  # each needs the ones before it
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")

HEAD = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC plots</title>
<!-- The charts' libraries are inlined below (see vendor.json and the LICENSE files in .dvc/plots/),
     so this page needs no network: DVC's default page loads them from a CDN. -->
<style>
  body { font-family: sans-serif; }
  table { border-spacing: 15px; }
  img { max-width: 100%; }
</style>
"""
TAIL = """</head>
<body>
{plot_divs}
</body>
</html>
"""


def read_package(tgz: Path) -> dict:
    """name, version, licence, the minified browser build and the LICENSE text of an npm tarball."""
    with tarfile.open(tgz) as tar:
        meta = json.load(tar.extractfile("package/package.json"))
        name = meta["name"]
        js = tar.extractfile(f"package/build/{name}.min.js").read()
        names = tar.getnames()
        license_text = tar.extractfile("package/LICENSE").read() if "package/LICENSE" in names else None
    text = js.decode("utf-8")
    for bad in ("</script", *PLACEHOLDERS):
        if bad in text:
            raise SystemExit(f"{tgz}: {bad!r} in {name}.min.js would break the inlined page")
    return {"name": name, "version": meta["version"], "license": meta["license"], "js": text,
            "license_text": license_text,
            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()}


def build(packages: list[dict]) -> str:
    scripts = "".join(f"<!-- {p['name']} {p['version']} ({p['license']}): package/build/{p['name']}.min.js -->\n"
                      f"<script>{p['js']}</script>\n" for p in packages)
    return HEAD + scripts + TAIL


def main(paths: list[str]) -> None:
    packages = {p["name"]: p for p in map(read_package, map(Path, paths))}
    if sorted(packages) != sorted(ORDER):
        raise SystemExit(f"usage: build_page.py TARBALL... for exactly {', '.join(ORDER)}")
    ordered = [packages[name] for name in ORDER]
    (HERE / "page.html").write_text(build(ordered), encoding="utf-8")
    vendor = [{"package": p["name"], "version": p["version"], "license": p["license"],
               "file": f"package/build/{p['name']}.min.js", "bytes": len(p["js"].encode()),
               "sha256": hashlib.sha256(p["js"].encode()).hexdigest(), "npm_integrity": p["integrity"]}
              for p in ordered]
    (HERE / "vendor.json").write_text(json.dumps(vendor, indent=2) + "\n", encoding="utf-8")
    for p in ordered:
        if p["license_text"] is not None:
            (HERE / f"LICENSE.{p['name']}").write_bytes(p["license_text"])


if __name__ == "__main__":
    main(sys.argv[1:])
