"""The economics of each cheating strategy at the defaults (bench/verification_adversary.py's
`economics` section): a MODEL computed from the measured rows (detect_per_job, compute_saved,
each round's failure pattern), no I/O and no torch, so that tests/bench/
test_verification_economics.py can check it on made-up rows."""

from __future__ import annotations

from tessera.chain.verification import VerificationParams
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.lease import order_deposit
from tessera.protocol.money import PAYMENT_DECIMALS, STAKE_DECIMALS

SAVING_FLOOR, GOAL = 0.10, 0.99   # issue 11: strategies saving >= 10 % caught >= 99 % per job


def forfeit_if_slow(row: dict, p: float, n: int) -> float:
    """The expected fraction of the job's pay a cheater loses when the verdict comes only at the
    end of the vote period (the worst case: its rounds before the caught one may be released
    meanwhile): sum over rounds r of P(first caught in r) x (R - r) / R, the caught round and
    every later one. A round is caught with 1 if a cheap or payload check fails in it, else
    p x (segments failing) / n (the `predicted` rule)."""
    pattern = row["failure_pattern"]
    rounds, escaped, lost = len(pattern), 1.0, 0.0
    for r, f in enumerate(pattern):
        q = 1.0 if not (f["cheap_ok"] and f["payload_ok"]) else p * len(f["segments_failed"]) / n
        lost += escaped * q * (rounds - r) / rounds
        escaped *= 1 - q
    return lost


def economics(spec: JobSpec, rows: list[dict]) -> dict:
    """G = compute_saved x C_job - detect x (S_net v + pay forfeited) per worker and job; v*
    where G = 0 (TUSD per TSTK). Amounts in base units are exact; G and v* are expectations."""
    vp = VerificationParams()
    # what a cheater cannot win back: its sybil may be the challenger and the tenant too
    s_net = (vp.slash_amount - vp.voter_reward) * (10_000 - vp.challenger_bps - vp.tenant_bps) \
        // 10_000
    c_job = order_deposit(spec.order.max_price_per_gpu_hour, spec.order.min_gpus, 1,
                          spec.order.duration)
    held = min(1.0, vp.challenge_window / spec.order.duration)   # held at a prompt verdict
    v = spec.verification
    p, n = v.spot_check_probability, spec.diloco.inner_steps // v.checkpoint_every
    tusd, tstk = 10**PAYMENT_DECIMALS, 10**STAKE_DECIMALS
    out = []
    for row in rows:
        saved, d = row["compute_saved"], row["detect_per_job"]
        g0 = (saved - d * held) * c_job / tusd
        v_star = g0 / (d * s_net / tstk) if d > 0 else None
        slow = forfeit_if_slow(row, p, n)
        g0_slow = (saved - slow) * c_job / tusd
        v_slow = g0_slow / (d * s_net / tstk) if d > 0 else None
        out.append({"name": row["name"], "compute_saved": saved, "detect_per_job": d,
                    "G_at_v0_tusd": round(g0, 6),
                    "G_at_v1_tusd": round(g0 - d * s_net / tstk, 6),
                    "break_even_v_tusd_per_tstk": round(v_star, 6) if v_star is not None else None,
                    "loses_at_any_v": v_star is not None and v_star <= 0,
                    "forfeited_if_verdict_slow": round(slow, 4),
                    "G_at_v0_if_verdict_slow_tusd": round(g0_slow, 6),
                    "break_even_v_if_verdict_slow": round(v_slow, 6) if v_slow is not None else None,
                    "loses_at_any_v_if_verdict_slow": v_slow is not None and v_slow <= 0})
    eligible = [r for r in out if r["compute_saved"] >= SAVING_FLOOR]
    check = {r["name"]: ("caught" if r["detect_per_job"] >= GOAL else
                         "unprofitable at any v" if r["loses_at_any_v"] else "neither")
             for r in eligible}
    goal_check = {
        "rule": f"every strategy saving >= {SAVING_FLOOR:.0%} of the compute is caught with >= "
                f"{GOAL:.0%} per job, or loses money at any stake price (the issue's 'or shown "
                "unprofitable'); the prompt-verdict model",
        "strategies": check, "met": all(v != "neither" for v in check.values()),
        "met_if_verdict_slow": all(r["detect_per_job"] >= GOAL or r["loses_at_any_v_if_verdict_slow"]
                                   for r in eligible)}
    return {
        "goal_check": goal_check,
        "model": "per worker and job (a MODEL from the measured detect_per_job and failure "
                 "patterns). C_job = max_price_per_gpu_hour x min_gpus x duration of "
                 "examples/diloco.toml (the most one worker's lease can be paid; used as both "
                 "its pay P_job and, as an upper bound, its compute cost: a provider with no "
                 "margin at all). A cheat proven for a lease forfeits all of its pay not yet "
                 "released (Verification.cheated, Settlement): a round's pay is released only "
                 "once its challenge window closed, so at a verdict soon after the challenge "
                 "(validators vote as soon as they have replayed) the pay still held is "
                 "min(1, challenge_window / duration) of the job's; S_net = (slash - voter "
                 "reward) x (1 - challenger share), the stake a cheater loses even when it is "
                 "its own challenger's voters; v = TUSD per TSTK. '_if_verdict_slow': the worst "
                 "case, the verdict at the end of the vote period, so that rounds before the "
                 "caught one may have been released meanwhile: only the caught round and later "
                 "ones are forfeited (expected fraction from the failure pattern).",
        "C_job_base_units": c_job, "C_job_tusd": c_job / tusd,
        "held_fraction_at_verdict": held,
        "pay_forfeited_base_units": int(held * c_job),
        "S_net_base_units": s_net, "S_net_tstk": s_net / tstk,
        "S_net_source": "chain.verification.VerificationParams defaults (docs/verification.md: "
                        "71.25 TSTK)",
        "strategies": out}
