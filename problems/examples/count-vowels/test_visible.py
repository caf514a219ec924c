from solution import count_vowels


def test_example():
    assert count_vowels("Hello World") == 3


def test_no_vowels():
    assert count_vowels("rhythm") == 0


def test_upper_case():
    assert count_vowels("AEIOU") == 5
