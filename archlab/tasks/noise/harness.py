"""The noise task's harness: runs inside the sandbox, stdlib only (never imports archlab).

usage: python harness.py INPUT/spec.json OUTPUT_DIR

The candidate's `VARIANT = <int>` is read from its source (never executed). The score is
seeded noise: a part every run under one seed shares (as a data order would) plus a part
of its own, and the planted effect for every variant >= 0 (the baselines are negative).
"""
import ast
import json
import random
import sys
import time


def gauss(*key):
    return random.Random(":".join(map(str, key))).gauss(0.0, 1.0)  # a str seed is hashed, never salted


def variant_of(path):
    for node in ast.parse(open(path).read()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "VARIANT" for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    raise ValueError("the module must set VARIANT to an integer literal")


def main():
    spec_path, out = sys.argv[1], sys.argv[2]
    spec = json.load(open(spec_path))
    try:
        v = variant_of(spec_path.rsplit("/", 1)[0] + "/candidate.py")
    except (SyntaxError, ValueError) as exc:
        result = {"status": "integrity", "reason": str(exc)}
    else:
        seed = spec["seed"]
        score = (spec["effect"] * (v >= 0) + spec["shared"] * gauss("shared", seed)
                 + spec["noise"] * gauss("own", seed, v))
        result = {"status": "ok", "fingerprint": f"variant-{v}", "params": 0}
        if spec["mode"] == "train":
            time.sleep(spec["delay_s"])
            result["metrics"] = {"score": score}
    with open(out + "/result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
