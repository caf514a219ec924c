def count_vowels(s: str) -> int:
