import pytest

from solution import count_vowels


def test_empty():
    assert count_vowels("") == 0


@pytest.mark.parametrize("text, expected", [("banana", 3), ("Queueing", 5), ("xyz", 0), ("a" * 1000, 1000)])
def test_words(text, expected):
    assert count_vowels(text) == expected


def test_y_is_not_a_vowel():
    assert count_vowels("yYy") == 0
