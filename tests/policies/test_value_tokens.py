import math

import pytest

from policies.answer_features import FEATURE_GROUPS, FEATURES, answer_features
from policies.grounding import GroundingReport
from policies.value_tokens import MARGIN_CAP, Span, value_spans, value_token_features
from policies.verifiers import Verdict


def token(text: str, logprob: float, *alternatives: float) -> dict:
    """A logprobs entry as vLLM returns it after the grammar mask: masked alternatives at -9999."""
    top = [{"token": text, "logprob": logprob}, *({"token": "?", "logprob": a} for a in alternatives)]
    return {"token": text, "logprob": logprob, "top_logprobs": top}


# [{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}]<|im_end|>, as the SLM tokenised it
ANSWER = [
    token("[", 0.0, -9999.0), token('{"', -0.52, -0.90), token("name", 0.0, -9999.0), token('":"', -0.70, -0.70),
    token("get", -0.01, -5.0), token("_weather", 0.0, -9999.0), token('","', 0.0, -9999.0),
    token("arguments", 0.0, -9999.0), token('":{"', 0.0, -9999.0), token("city", 0.0, -9999.0),
    token('":"', -0.69, -0.70), token("Par", -0.26, -1.6), token("is", -0.02, -4.0), token('","', 0.0, -9999.0),
    token("unit", 0.0, -9999.0), token('":"', 0.0, -9999.0), token("c", -0.06, -2.9), token("elsius", 0.0, -9999.0),
    token('"}}]', 0.0, -9999.0), token("<|im_end|>", 0.0, -9999.0),
]


def test_value_spans_are_the_leaf_values_and_mark_the_function_name():
    text = '[{"name":"f","arguments":{"a":"x y","b":[1, 2.5],"c":{"d":true}}}]'
    spans = value_spans(text)
    assert [text[s.start:s.end] for s in spans] == ["f", "x y", "1", "2.5", "true"]
    assert [s.is_name for s in spans] == [True, False, False, False, False]


@pytest.mark.parametrize("text", ['{"a": "cut sho', "plain text", '{"a" 1}', "", "[" * 5000 + "]" * 5000])
def test_no_spans_for_text_that_is_not_json(text: str):
    assert value_spans(text) == []


def test_keys_escapes_and_empty_strings():
    text = '{"k\\"ey": "v\\"al", "e": ""}'
    assert [(text[s.start:s.end]) for s in value_spans(text)] == ['v\\"al', ""]
    assert value_spans('{"e": ""}') == [Span(7, 7)]


def test_only_value_and_name_tokens_count_not_the_scaffolding():
    features = value_token_features(ANSWER)
    # value tokens: Par, is, c, elsius; the name tokens: get, _weather
    assert features.value_tokens == 4
    assert features.mean_logprob == pytest.approx((-0.26 - 0.02 - 0.06 + 0.0) / 4)
    assert features.min_logprob == pytest.approx(-0.26)
    assert features.name_min_logprob == pytest.approx(-0.01)
    assert features.min_margin == pytest.approx(-0.26 - -1.6)  # masked alternatives do not count
    margins = [-0.26 + 1.6, -0.02 + 4.0, -0.06 + 2.9, MARGIN_CAP]
    assert features.mean_margin == pytest.approx(sum(margins) / 4)


def test_scaffolding_spellings_do_not_move_the_value_features():
    """`{"` vs `{` and `":` vs `":"` are spellings of one JSON: changing their logprobs changes nothing here."""
    noisy = [dict(t, logprob=-3.0) if t["token"] in ('{"', '":"') else t for t in ANSWER]
    assert value_token_features(noisy) == value_token_features(ANSWER)


def test_no_logprobs_or_no_json_gives_no_value_features():
    assert value_token_features([]).mean_logprob is None
    assert value_token_features([token("hello", -0.1)]).value_tokens == 0


def test_answer_features_name_every_group_and_leave_out_what_does_not_apply():
    grounding = GroundingReport(0.5, (1.0, 0.0), 0, ("x",))
    features = answer_features(ANSWER, [Verdict("tool_calls", 1.0, True), Verdict("grounding", 0.5, False)],
                               grounding)
    assert set(features) == set(FEATURES) - set(FEATURE_GROUPS["size"])
    assert sum(map(len, FEATURE_GROUPS.values())) == len(FEATURES)
    assert features["verifier"] == 1.0  # the grounding verdict is its own feature, not a form verifier's
    assert features["grounding"] == 0.5 and features["grounding_min"] == 0.0
    assert features["value_count"] == pytest.approx(math.log1p(2))
    remote = answer_features(None, [Verdict("tool_calls", 1.0, True)])  # a remote tier: no logprobs
    assert remote == {"verifier": 1.0}
