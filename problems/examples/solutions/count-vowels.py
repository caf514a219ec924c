def count_vowels(s: str) -> int:
    return sum(1 for char in s if char in "aeiouAEIOU")
