#!/usr/bin/env python3
"""Reference values for feedloop-privacy's accountants, from the libraries privacy teams trust.

* RDP accountant: Google's dp-accounting (`dp_accounting.rdp.RdpAccountant`), Poisson-subsampled
  Gaussian over a grid of noise multipliers, sampling rates, step counts and deltas.
* zCDP -> (eps, delta): OpenDP's `make_zCDP_to_approxDP` on a grid of rho and delta.
* k-ary randomized response: dp-accounting's PLD accountant (`RandomizedResponseDpEvent` with
  `num_buckets = k`, replace-one neighbours) on the most accurate table for a grid of epsilon and k.
* Ledger replay: the dp_event JSON that `Ledger::to_json` emits, replayed with dp-accounting
  by `replay_ledger_event` (the same snippet as docs/PRIVACY.md).

Usage (from the repo root, with the venv that has tools/requirements-test.txt):
    .venv/bin/python tools/privacy_reference.py           # writes tests/fixtures/privacy_reference.json
    .venv/bin/python tools/privacy_reference.py --check   # recomputes; exit 1 if the fixture differs

The Rust test privacy/tests/reference.rs reads the fixture and holds the Rust accountants to
0.1 % (RDP epsilon) and 1e-9 relative (zCDP epsilon).
"""

import argparse
import json
import math
import sys
from pathlib import Path

from absl import logging as absl_logging
import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib
import opendp.prelude as dp

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "privacy_reference.json"

RDP_SIGMAS = [0.5, 0.8, 1.0, 2.0, 5.0]
RDP_QS = [1e-4, 1e-3, 0.01, 0.1, 1.0]
RDP_STEPS = [1, 10, 1000, 100000]
RDP_DELTAS = [1e-9, 1e-5, 1e-3]

ZCDP_RHOS = [1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0]
ZCDP_DELTAS = [1e-12, 1e-9, 1e-6, 1e-5, 1e-3, 0.1]

# A ledger of four releases as Ledger::to_json describes it: three rounds at sigma = 2C
# (noise multiplier sigma / (2C) = 1.0), one at C = 0.5, sigma = 2.5 (multiplier 2.5).
LEDGER_RELEASES = [
    {"clip_norm": 1.0, "noise_stddev": 2.0},
    {"clip_norm": 1.0, "noise_stddev": 2.0},
    {"clip_norm": 1.0, "noise_stddev": 2.0},
    {"clip_norm": 0.5, "noise_stddev": 2.5},
]
LEDGER_DELTA = 1e-6


# --- replay snippet (kept identical to docs/PRIVACY.md) -------------------------------------
def replay_ledger_event(event: dict) -> "dp_accounting.DpEvent":
    """Turns the `dp_event` JSON of a feedloop ledger export into a dp-accounting DpEvent."""
    kind = event["dp_event"]
    if kind == "GaussianDpEvent":
        return dp_accounting.GaussianDpEvent(event["noise_multiplier"])
    if kind == "RandomizedResponseDpEvent":
        return dp_accounting.RandomizedResponseDpEvent(event["noise_parameter"], event["num_buckets"])
    if kind == "NoOpDpEvent":  # a consent change: nothing was released
        return dp_accounting.NoOpDpEvent()
    if kind == "SelfComposedDpEvent":
        return dp_accounting.SelfComposedDpEvent(replay_ledger_event(event["event"]), event["count"])
    if kind == "ComposedDpEvent":
        return dp_accounting.ComposedDpEvent([replay_ledger_event(e) for e in event["events"]])
    raise ValueError(f"unknown dp_event {kind}")


def ledger_epsilon(ledger_export: dict, delta: float) -> float:
    """Epsilon of a whole ledger export under dp-accounting's RDP accountant (replace-one)."""
    accountant = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    accountant.compose(replay_ledger_event(ledger_export["dp_event"]))
    return accountant.get_epsilon(delta)
# ---------------------------------------------------------------------------------------------


def rdp_grid():
    cases = []
    for sigma in RDP_SIGMAS:
        for q in RDP_QS:
            for steps in RDP_STEPS:
                accountant = dp_accounting.rdp.RdpAccountant()
                event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
                accountant.compose(event, steps)
                for delta in RDP_DELTAS:
                    eps, order = accountant.get_epsilon_and_optimal_order(delta)
                    cases.append({
                        "noise_multiplier": sigma, "sampling_probability": q, "steps": steps,
                        "delta": delta, "epsilon": float(eps), "optimal_order": float(order),
                    })
    return cases


def opendp_epsilon(rho: float, delta: float) -> float:
    # A measurement whose privacy map returns exactly rho (no float rounding of a scale),
    # cast to approximate DP by OpenDP's zCDP -> (eps, delta) combinator.
    meas = dp.m.make_user_measurement(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float),
        dp.zero_concentrated_divergence(), lambda x: x, lambda d_in: rho, TO="ExtrinsicObject",
    )
    return dp.c.make_zCDP_to_approxDP(meas).map(1.0).epsilon(delta)


def zcdp_grid():
    return [
        {"rho": rho, "delta": delta, "epsilon": opendp_epsilon(rho, delta)}
        for rho in ZCDP_RHOS for delta in ZCDP_DELTAS
    ]


CATEGORICAL_EPSILONS = [0.25, 0.5, 1.0, 2.0, 4.0]
CATEGORICAL_KS = [2, 3, 5, 10, 64]


def categorical_grid():
    """The epsilon dp-accounting's PLD accountant gives k-ary randomized response at delta = 0, for
    the noise parameter of the most accurate eps-LDP table (k / (e^eps + k - 1))."""
    from dp_accounting.pld import pld_privacy_accountant as pld_lib
    cases = []
    for eps in CATEGORICAL_EPSILONS:
        for k in CATEGORICAL_KS:
            noise = k / (math.exp(eps) + k - 1)
            accountant = pld_lib.PLDAccountant(dp_accounting.NeighboringRelation.REPLACE_ONE)
            accountant.compose(dp_accounting.RandomizedResponseDpEvent(noise, k))
            cases.append({"requested_epsilon": eps, "categories": k, "noise_parameter": noise,
                          "epsilon_pld": accountant.get_epsilon(0.0)})
    return cases


def ledger_case():
    multipliers = [r["noise_stddev"] / (2 * r["clip_norm"]) for r in LEDGER_RELEASES]
    events, last, count = [], None, 0
    for m in multipliers + [None]:
        if m == last:
            count += 1
            continue
        if last is not None:
            g = {"dp_event": "GaussianDpEvent", "noise_multiplier": last}
            events.append(g if count == 1 else {"dp_event": "SelfComposedDpEvent", "event": g, "count": count})
        last, count = m, 1
    export = {"dp_event": {"dp_event": "ComposedDpEvent", "events": events}}
    # The snippet also has to handle randomized response; exercise it (not compared in Rust).
    rr_export = {"dp_event": {"dp_event": "ComposedDpEvent", "events": [
        export["dp_event"], {"dp_event": "RandomizedResponseDpEvent", "noise_parameter": 0.5, "num_buckets": 2}]}}
    rr_eps = ledger_epsilon(rr_export, LEDGER_DELTA)
    eps = ledger_epsilon(export, LEDGER_DELTA)
    assert rr_eps > eps, "adding a release must not lower epsilon"
    return {"releases": LEDGER_RELEASES, "delta": LEDGER_DELTA, "dp_event": export["dp_event"], "epsilon_rdp": eps}


def compute():
    import importlib.metadata as md
    return {
        "generated_by": "tools/privacy_reference.py",
        "dp_accounting_version": md.version("dp-accounting"),
        "opendp_version": md.version("opendp"),
        "rdp_default_orders": [float(x) for x in rdp_lib.DEFAULT_RDP_ORDERS],
        "rdp_poisson_gaussian": rdp_grid(),
        "zcdp_to_approx_dp": zcdp_grid(),
        "ledger_replay": ledger_case(),
        "categorical_response": categorical_grid(),
    }


def compare(new, old, path="", rel=1e-12):
    """Yields differences between two JSON trees (floats compared to `rel`)."""
    if isinstance(new, dict) and isinstance(old, dict):
        for k in sorted(set(new) | set(old)):
            if k not in new or k not in old:
                yield f"{path}/{k}: present in only one"
            else:
                yield from compare(new[k], old[k], f"{path}/{k}", rel)
    elif isinstance(new, list) and isinstance(old, list):
        if len(new) != len(old):
            yield f"{path}: length {len(new)} != {len(old)}"
        for i, (a, b) in enumerate(zip(new, old)):
            yield from compare(a, b, f"{path}[{i}]", rel)
    elif isinstance(new, float) or isinstance(old, float):
        a, b = float(new), float(old)
        if not (a == b or (math.isfinite(a) and abs(a - b) <= rel * max(abs(a), abs(b)))):
            yield f"{path}: {a!r} != {b!r}"
    elif new != old:
        yield f"{path}: {new!r} != {old!r}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed fixture")
    args = parser.parse_args()
    dp.enable_features("contrib", "honest-but-curious")
    # dp-accounting warns (and excludes the order) when a fractional-order series does not
    # converge; the Rust port does the same, so the warnings are noise here.
    absl_logging.set_verbosity(absl_logging.ERROR)
    data = compute()
    if args.check:
        if not FIXTURE.exists():
            print(f"missing {FIXTURE}", file=sys.stderr)
            return 1
        diffs = list(compare(data, json.loads(FIXTURE.read_text())))
        for d in diffs[:50]:
            print(d, file=sys.stderr)
        if diffs:
            print(f"{len(diffs)} differences: regenerate with tools/privacy_reference.py", file=sys.stderr)
            return 1
        print(f"{FIXTURE.name}: up to date ({len(data['rdp_poisson_gaussian'])} RDP cases, "
              f"{len(data['zcdp_to_approx_dp'])} zCDP cases)")
        return 0
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
