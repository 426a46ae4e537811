"""How often grounding flags BFCL's own right answers, beside a literal check (every value written verbatim).

Each case's right answer is its first acceptable value per argument. Prints one line per category:

    .venv/bin/python bench/experiments/grounding_on_bfcl_truth.py
"""
import json

from cluster.evaluation.bfcl import load_cases
from policies.grounding import GroundingVerifier, conversation_text
from policies.verifiers import Candidate, ToolCall


def leaves(v):
    if isinstance(v, dict):
        for x in v.values(): yield from leaves(x)
    elif isinstance(v, list):
        for x in v: yield from leaves(x)
    else: yield v
for cat in ["simple_python","parallel","live_multiple","multiple","live_simple","parallel_multiple"]:
    cases=load_cases(cat, None); lit=ours=0
    for c in cases:
        text=conversation_text(c.messages); calls=[]; bad=False
        for gt in c.ground_truth:
            (name,args),=gt.items()
            a={k:v[0] for k,v in args.items() if v and v[0]!=""}
            calls.append(ToolCall(name,json.dumps(a)))
            for x in leaves(a):
                if not isinstance(x,bool) and x is not None and str(x) not in text: bad=True
        lit+=bad; ours+= not GroundingVerifier(c.messages,c.tools).verify(Candidate(tool_calls=tuple(calls))).passed
    print(f"{cat:18s} {len(cases):5d}  literal check flags {lit/len(cases):.1%}  grounding flags {ours/len(cases):.1%}")
