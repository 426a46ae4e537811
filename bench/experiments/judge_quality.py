"""Does the route's judge score right answers above wrong ones? Asks the running cluster's judge deployment about
pairs of a right and a wrong answer to the same question and prints both scores. Not a test: a measurement of
the bundled judge tier (`cascade up` with a route that has a judge first; the test cluster has `judged`).

    .venv/bin/python bench/experiments/judge_quality.py --deployment judge-judged
"""

from __future__ import annotations

import argparse

PAIRS = [  # question, a right answer, a wrong one
    ("What is the capital of France?", "Paris", "Berlin"),
    ("What is 2 plus 3?", "5", "7"),
    ("Name a fruit.", "apple", "hammer"),
    ("What colour is the sky on a clear day?", "blue", "green"),
    ("Translate 'hello' to French.", "bonjour", "gracias"),
    ("How many legs does a spider have?", "8", "6"),
    ("What is the opposite of hot?", "cold", "loud"),
    ("Which planet do we live on?", "Earth", "Mars"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployment", default="judge-judged")
    parser.add_argument("--app", default="slm-cascade")
    args = parser.parse_args()
    import ray
    from ray import serve

    from policies.verifiers import Candidate

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False, namespace="judge-quality")
    judge = serve.get_deployment_handle(args.deployment, args.app)
    print("| question | right | score | wrong | score |\n| --- | --- | --- | --- | --- |")
    ranked_right = 0
    for question, right, wrong in PAIRS:
        body = {"model": "cascade", "messages": [{"role": "user", "content": question}]}
        scores = [judge.verify.remote(body, Candidate(text=answer)).result(timeout_s=120).score
                  for answer in (right, wrong)]
        ranked_right += scores[0] > scores[1]
        print(f"| {question} | {right} | {scores[0]:.3f} | {wrong} | {scores[1]:.3f} |")
    print(f"\nright answer scored above the wrong one: {ranked_right} of {len(PAIRS)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
