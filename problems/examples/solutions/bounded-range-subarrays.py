from collections import deque
from typing import List


class Solution:
    def countBoundedSubarrays(self, nums: List[int], k: int) -> int:
        # Two pointers with monotonic deques of the window's max and min: O(n).
        maxq, minq = deque(), deque()
        left = 0
        total = 0
        for right, x in enumerate(nums):
            while maxq and nums[maxq[-1]] <= x:
                maxq.pop()
            maxq.append(right)
            while minq and nums[minq[-1]] >= x:
                minq.pop()
            minq.append(right)
            while nums[maxq[0]] - nums[minq[0]] > k:
                left += 1
                if maxq[0] < left:
                    maxq.popleft()
                if minq[0] < left:
                    minq.popleft()
            total += right - left + 1
        return total
