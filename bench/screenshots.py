"""Screenshots of the study report (HTML) and of optuna-dashboard, taken with headless Chromium.

    python bench/screenshots.py [--out docs/screenshots] [--storage URL --study NAME] [--trials 60]

Without --storage, a demo study (reports/demo.py: the fake objective that stores what a real
trial stores, 60 trials with median pruning) is written to a temporary SQLite file. The report
is written with `reports.build.write_report` and opened as a file:// page; the dashboard is
`vantage-sweep dashboard`'s own server (studies/dashboard.py), bound to 127.0.0.1 on a free
port, and stopped afterwards. PNGs are reduced to a 256-colour palette (Pillow) so each stays
well under 300 KB. Needs Debian's `chromium` (apt-get install chromium), as CI installs it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--force-device-scale-factor=1"]
MAX_BYTES = 300 * 1024


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no chromium found: apt-get install -y chromium")


def shoot(url: str, out: Path, size: tuple[int, int], profile: str, budget_ms: int = 8000) -> Path:
    """One screenshot of `url` at `size` (width, height); JS gets `budget_ms` of virtual time."""
    tmp = out.with_suffix(".raw.png")
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
           f"--virtual-time-budget={budget_ms}", f"--screenshot={tmp}", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if not tmp.exists():
        raise SystemExit(f"chromium wrote no screenshot of {url}: {r.stderr[-800:]}")
    shrink(tmp, out)
    tmp.unlink()
    return out


def shrink(src: Path, dst: Path) -> None:
    """Palette PNG (256 colours, optimized): screenshots of text and plots stay sharp and small."""
    from PIL import Image
    im = Image.open(src).convert("RGB")
    for colors in (256, 128, 64):
        im.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
        if dst.stat().st_size <= MAX_BYTES:
            return
    im = im.resize((im.width * 3 // 4, im.height * 3 // 4))
    im.quantize(colors=64).save(dst, optimize=True)


def report_page(study: optuna.Study, out_dir: Path, section: str | None = None) -> str:
    """The report written to `out_dir`; its file:// URL, optionally cut to one section (a copy of
    the HTML with the other sections left out, so the screenshot starts at that section)."""
    from reports.build import build_report, write_report
    from reports.html import to_html

    write_report(study, out_dir)
    if section is None:
        return (out_dir / "report.html").resolve().as_uri()
    rep = build_report(study)
    rep.sections = [s for s in rep.sections if s.key == section]
    page = out_dir / f"report-{section}.html"
    page.write_text(to_html(rep))
    return page.resolve().as_uri()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/screenshots", help="folder for the PNGs (default: docs/screenshots)")
    ap.add_argument("--storage", help="Optuna storage URL of an existing study (default: a demo study)")
    ap.add_argument("--study", help="study name in --storage")
    ap.add_argument("--trials", type=int, default=60, help="trials of the demo study (default: 60)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vantage-shots-"))
    try:
        if args.storage:
            url, name = args.storage, args.study
            study = optuna.load_study(study_name=name, storage=url)
        else:
            from reports.demo import make_demo_study
            url, name = f"sqlite:///{work}/demo.db", "demo-lr-sweep"
            study = make_demo_study(args.trials, storage=url, study_name=name)
        profile = str(work / "profile")
        shots = [
            shoot(report_page(study, work / "report"), out / "report.png", (1200, 1500), profile),
            shoot(report_page(study, work / "report", "params"), out / "report_params.png", (1200, 1700), profile),
            shoot(report_page(study, work / "report", "diagnosis"), out / "report_diagnosis.png", (1400, 1100), profile),
        ]
        from studies.dashboard import make_dashboard_server
        server = make_dashboard_server(url, "127.0.0.1", 0)     # loopback only: the dashboard has no login
        th = threading.Thread(target=server.serve_forever, daemon=True)
        th.start()
        try:
            base = f"http://127.0.0.1:{server.server_port}"
            deadline = time.time() + 30
            while True:
                try:
                    studies = json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=10).read())
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
            sid = next(s["study_id"] for s in studies["study_summaries"] if s["study_name"] == name)
            shots.append(shoot(f"{base}/dashboard/studies/{sid}", out / "dashboard.png", (1400, 1000), profile,
                               budget_ms=15000))
            shots.append(shoot(f"{base}/dashboard/studies/{sid}/trials", out / "dashboard_trials.png", (1400, 1000),
                               profile, budget_ms=15000))
        finally:
            server.shutdown()
            server.server_close()
        for p in shots:
            print(f"{p} {p.stat().st_size / 1024:.0f} KB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
