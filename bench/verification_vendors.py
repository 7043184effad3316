"""Intel against AMD: which of MKL's GEMM branches give the same bits on both, and how far an
honest replay on other kernels lands from the cheats (the figures a tolerance would need).

Why. The numerics profile (compute/numerics.py) takes MKL's COMPATIBLE branch, the one Intel
documents as running the same code on Intel and AMD; it costs 0.35-0.52x the training speed
(bench/results/verification_adversary.json, numerics_profile_cost). MKL's AVX2 branch costs
nothing on AMD, but on AMD it is not a branch at all (MKL_CBWR=AVX2 reports CNR:AUTO: MKL's own
AMD dispatch), so whether it gives Intel's bits was open.

How Intel is measured on an AMD host. MKL decides it runs on Intel by calling its own exported
`mkl_serv_intel_cpu_true()` (libtorch_cpu.so links MKL statically and exports it); a
two-line library given as LD_PRELOAD answers 1, and MKL then dispatches its Intel code paths
(MKL_VERBOSE reports CNR:AVX2 / CNR:AVX512 where it reported CNR:AUTO). The code then run is
Intel's; the CPU is still this one (an Intel CPU was not measured). The library is compiled
here with `cc`; without a C compiler the "intel" rows are skipped and say so.

1. bits: one round of the bench model (bench/verification_hetero.py's, H = 20, k = 2, 1
   thread) trained in a fresh process per (MKL dispatch, branch), ATen and oneDNN pinned to
   AVX2 as the profile does; the end checkpoint's hashes compared across dispatches. Also the
   hashes recorded on every host this bench (or verification_hetero.py) has run on, so that two
   real CPUs are compared, not only emulated ones.
2. distances: the default workload (examples/diloco.toml's model, H = 50, k = 5, two rounds)
   trained under three GEMM kernels (COMPATIBLE, AMD's AUTO, Intel's AVX2) and every segment
   replayed under the others; and from the same committed start states, cheats (the last step
   of a segment skipped, half of each batch, bf16 autocast, 2 threads where 1 was signed).
   Distance = ||replay end - committed end||_2 / ||committed end - segment start||_2 over all
   parameters (relative to how far the segment moved), and the largest |difference|.

Reproduce: .venv/bin/python bench/verification_vendors.py (~2 min); writes
bench/results/verification_vendors.json (one row per host is kept across runs).
`--model-10m` (~9 min) adds `distances_10m`: the same distances on the 10.8 M-parameter model
(one round of H = 20).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import verification_hetero as hetero

RESULT = Path(__file__).parent / "results" / "verification_vendors.json"
HERE = Path(__file__).resolve()
INTERPOSER_C = ("int mkl_serv_intel_cpu_true(void) { return 1; }\n"
                "int mkl_serv_intel_cpu(void) { return 1; }\n")
BRANCHES = ("COMPATIBLE", "AVX2", "AVX512", "AUTO")
KERNELS = {"compatible": ("amd", "COMPATIBLE"), "amd-auto": ("amd", "AVX2"),
           "intel-avx2": ("intel", "AVX2")}
CHEATS = ("skip-last-step", "half-batch", "bf16-autocast", "threads-2-of-1")
H, K, ROUNDS = 50, 5, 2
# --model-10m: the 10.8 M-parameter model of bench/verification_adversary.py's overhead rows,
# one shorter round (its steps take ~1-3 s each on one thread)
MODEL_10M = {"n_layer": 6, "n_head": 6, "n_embd": 384}
H_10M, ROUNDS_10M = 20, 1


def build_interposer(tmp: Path) -> tuple[str | None, str | None]:
    """(path of the LD_PRELOAD library, None) or (None, why not)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc) on this host"
    src, lib = tmp / "mkl_intel.c", tmp / "mkl_intel.so"
    src.write_text(INTERPOSER_C)
    proc = subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)],
                          capture_output=True, text=True)
    return (str(lib), None) if proc.returncode == 0 else (None, proc.stderr.strip()[-200:])


def run(spec: dict, dispatch: str, lib: str | None, extra: dict | None = None) -> dict:
    """`spec` in a fresh pinned process whose MKL believes it runs on `dispatch`'s vendor."""
    env = dict(extra or {})
    if dispatch == "intel":
        env["LD_PRELOAD"] = lib
    if spec["role"] in ("train", "probe"):          # verification_hetero.py's own roles
        answer, err = hetero.run_child(spec, None, env)
        if answer is None:
            raise SystemExit(f"{spec['role']} ({dispatch}, {spec.get('cbwr')}): {err}")
        return answer
    proc = subprocess.run([sys.executable, str(HERE), "--child", json.dumps(spec)],
                          env=hetero.child_env(None, env), capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{spec['role']} ({dispatch}): {proc.stderr.strip()[-600:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mkl_branch(dispatch: str, branch: str, lib: str | None) -> str | None:
    """What MKL_VERBOSE reports for one GEMM under this dispatch and MKL_CBWR."""
    env = hetero.child_env(None, {"MKL_VERBOSE": "1", "MKL_CBWR": branch,
                                  **({"LD_PRELOAD": lib} if dispatch == "intel" else {})})
    proc = subprocess.run([sys.executable, "-c", "import torch; x = torch.ones(64, 64); x @ x"],
                          env=env, capture_output=True, text=True, timeout=300)
    found = re.search(r"CNR:(\w+)", proc.stdout + proc.stderr)
    return found.group(1) if found else None


def host_key() -> dict:
    import torch

    caps = torch.cpu.get_capabilities()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    family = re.search(r"^cpu family\s*:\s*(\d+)", flags, re.M)
    model = re.search(r"^model\s*:\s*(\d+)", flags, re.M)
    vendor = re.search(r"^vendor_id\s*:\s*(\w+)", flags, re.M)
    return {"cpu": caps.get("cpu_name") or platform.processor(),
            "vendor": vendor.group(1) if vendor else None,
            "family_model": f"{family.group(1)}/{model.group(1)}" if family and model else None,
            "avx512f": bool(caps.get("avx512_f")), "torch": torch.__version__}


def bits(tmp: Path, lib: str | None) -> dict:
    import torch
    from verification import workload

    from tessera.compute.diloco import new_model, parameter_state

    start = tmp / "start.pt"
    torch.save(parameter_state(new_model(workload())), start)
    rows = []
    for dispatch in ("amd", "intel"):
        for branch in BRANCHES:
            if dispatch == "intel" and lib is None:
                continue
            answer = run({"role": "train", "pinned": True, "cbwr": branch, "start": str(start),
                          "out": str(tmp / "x.pt")}, dispatch, lib)
            rows.append({"mkl_dispatch": dispatch, "MKL_CBWR": branch,
                         "mkl_reports": mkl_branch(dispatch, branch, lib),
                         "end_params_hash": answer["end"][1], "end_adamw_hash": answer["end"][2]})
            print(json.dumps(rows[-1]), flush=True)
    by = {(r["mkl_dispatch"], r["MKL_CBWR"]): r["end_params_hash"] for r in rows}
    same = {branch: (by[("amd", branch)] == by[("intel", branch)]
                     if ("intel", branch) in by else None) for branch in BRANCHES}
    return {"rows": rows, "same_bits_intel_and_amd": same}


def hosts(previous: list[dict], this: dict, rows: list[dict]) -> list[dict]:
    """Every host's COMPATIBLE (the profile) and AMD-AUTO bits, this one's replacing its own."""
    ours = {r["MKL_CBWR"]: r["end_params_hash"] for r in rows if r["mkl_dispatch"] == "amd"}
    row = {**this, "profile_bits": ours["COMPATIBLE"], "mkl_avx2_bits": ours["AVX2"],
           "measured": time.strftime("%Y-%m-%d")}
    keep = [h for h in previous if {k: h.get(k) for k in this} != this]
    out = keep + [row]
    for h in out:
        h["profile_bits_agree_with_all"] = len({x["profile_bits"] for x in out}) == 1
    return out


def seed_hosts() -> list[dict]:
    """The host verification_heterogeneous.json was measured on, when it recorded the same
    bench round's pinned (COMPATIBLE) and AVX2-emulated (MKL AUTO) bits."""
    if RESULT.exists():
        return json.loads(RESULT.read_text()).get("hosts", [])
    path = hetero.RESULT
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    trained, host = data.get("trained", {}), data.get("host", {})
    if "end" not in trained.get("avx2/pinned", {}) or "end" not in trained.get("avx2/unpinned", {}):
        return []
    return [{"cpu": host.get("cpu"), "vendor": None, "family_model": None,
             "avx512f": bool(host.get("avx512f")), "torch": host.get("torch"),
             "profile_bits": trained["avx2/pinned"]["end"][1],
             "mkl_avx2_bits": trained["avx2/unpinned"]["end"][1],
             "measured": "from bench/results/verification_heterogeneous.json (its avx2 rows: "
                         "ATen and oneDNN AVX2, MKL AUTO)"}]


def distances(tmp: Path, lib: str | None, model: dict | None = None, h: int = H,
              rounds: int = ROUNDS) -> dict:
    kernels = {name: kd for name, kd in KERNELS.items() if kd[0] == "amd" or lib}
    shape = {"model": model, "h": h, "rounds": rounds}
    files = {}
    for name, (dispatch, branch) in kernels.items():
        files[name] = str(tmp / f"dist-{name}.pt")
        run({"role": "dist-train", "out": files[name], **shape}, dispatch, lib,
            {"MKL_CBWR_SET": branch})
        print(f"distances: trained under {name}", flush=True)
    honest = []
    for replay_name, (dispatch, branch) in kernels.items():
        answer = run({"role": "dist-replay", "files": files, **shape}, dispatch, lib,
                     {"MKL_CBWR_SET": branch})
        for train_name, d in answer["results"].items():
            honest.append({"train": train_name, "replay": replay_name, **d})
            print(json.dumps(honest[-1]), flush=True)
    cheats = run({"role": "dist-cheat", "file": files["amd-auto"], **shape}, "amd", lib,
                 {"MKL_CBWR_SET": "AVX2"})["results"]
    worst_honest = max(r["worst_rel_l2"] for r in honest)
    least_cheat = min(c["least_rel_l2"] for c in cheats.values() if c["saves_compute"])
    return {"honest": honest, "cheats": cheats, "worst_honest_rel_l2": worst_honest,
            "least_compute_saving_cheat_rel_l2": least_cheat,
            "margin": least_cheat / worst_honest if worst_honest else None,
            "setup": {"workload": "examples/diloco.toml's model" + (
                          f" with {model}" if model else ""), "inner_steps": h, "k": K,
                      "rounds": rounds, "threads": 1, "worker": 1, "workers": 3,
                      "cheats_replayed_under": "amd-auto, against the amd-auto trace"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-10m", action="store_true",
                        help="only the distances, on the 10.8 M-parameter model (H = 20, one "
                             "round), into the existing JSON's `distances_10m`")
    args = parser.parse_args()
    if args.child:
        from verification_vendors_child import child

        return child(json.loads(args.child))
    t0 = time.perf_counter()
    if args.model_10m:
        with tempfile.TemporaryDirectory() as tmp:
            lib, _ = build_interposer(Path(tmp))
            d = distances(Path(tmp), lib, MODEL_10M, H_10M, ROUNDS_10M)
        result = json.loads(RESULT.read_text())
        result["distances_10m"] = {**d, "wall_s": round(time.perf_counter() - t0, 1),
                                   "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        RESULT.write_text(json.dumps(result, indent=2))
        print(json.dumps({"margin": d["margin"], "worst_honest": d["worst_honest_rel_l2"],
                          "least_cheat": d["least_compute_saving_cheat_rel_l2"]}))
        return
    this = host_key()
    previous = seed_hosts()
    with tempfile.TemporaryDirectory() as tmp:
        lib, why_not = build_interposer(Path(tmp))
        b = bits(Path(tmp), lib)
        d = distances(Path(tmp), lib)
    result = {"bench": "verification_vendors", "when": time.strftime("%Y-%m-%d %H:%M:%S"),
              "host": this, "intel_dispatch": "emulated (LD_PRELOAD answers MKL's "
              "mkl_serv_intel_cpu_true)" if lib else f"not measured: {why_not}",
              "bits": b, "hosts": hosts(previous, this, b["rows"]), "distances": d,
              "wall_s": round(time.perf_counter() - t0, 1), "method": __doc__}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("intel_dispatch", "wall_s")}
                     | {"same_bits_intel_and_amd": b["same_bits_intel_and_amd"],
                        "margin": d["margin"]}, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()
