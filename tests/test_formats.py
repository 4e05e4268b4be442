import pytest

from config.errors import OutputParseError
from workers.formats import parse_choice, parse_score, parse_text


def test_a_constrained_score_output_parses():
    assert parse_score('{"score": 7, "reasoning": "sharp"}') == (7.0, "sharp")


def test_a_truncated_score_output_still_yields_the_score():
    assert parse_score('{"score": 10, "reasoning": "very sharp and we')[0] == 10.0


def test_free_text_scores_are_read_tolerantly():
    assert parse_score("I would rate it 8/10 overall.")[0] == 8.0


@pytest.mark.parametrize("text", ['{"score": 42}', "no number here", ""])
def test_an_unusable_score_is_a_parse_error(text):
    with pytest.raises(OutputParseError):
        parse_score(text)


def test_a_choice_is_read_from_a_letter_or_a_sentence():
    assert parse_choice(" b.", ["A", "B"]) == "B"
    assert parse_choice("Category A", ["A", "B"]) == "A"
    with pytest.raises(OutputParseError):
        parse_choice("Z", ["A", "B"])


def test_an_empty_summary_is_a_parse_error():
    with pytest.raises(OutputParseError):
        parse_text("  \n")
