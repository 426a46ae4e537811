"""A tier's engine_args reach vLLM through vLLM's own parser, `false` included."""

from __future__ import annotations

from cluster.config import TierConfig
from deployments.vllm_engine import engine_cli_args


def _parsed(engine_args: dict) -> object:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    negatable = {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--no-")}
    return parser.parse_args(engine_cli_args(TierConfig(name="slm", model="some/model", engine_args=engine_args),
                                             negatable))


def test_prefix_caching_is_vllms_choice_unless_a_tier_turns_it_off() -> None:
    assert _parsed({}).enable_prefix_caching is None  # vLLM turns it on where the model supports it
    assert _parsed({"enable_prefix_caching": False}).enable_prefix_caching is False


def test_false_for_a_flag_that_can_only_switch_on_leaves_it_off() -> None:
    assert _parsed({"disable_log_stats": False}).disable_log_stats is False
