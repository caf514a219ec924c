def move_one_ball(arr):
    n = len(arr)
    if n == 0:
        return True

    # Check if the array is sorted in non-decreasing order
    if all(arr[i] <= arr[i + 1] for i in range(n - 1)):
        return True

    # Try right shifting the array
    for i in range(1, n):
        arr.insert(0, arr.pop())

        # Check if the array is sorted in non-decreasing order
        if all(arr[i] <= arr[i + 1] for i in range(n - 1)):
            return True

    return False

# Test cases
print(move_one_ball([4, 3, 1, 2]))  # Output: True
print(move_one_ball([4, 3, 1, 2]))  # Output: True
print(move_one_ball([4, 3, 1, 2]))  # Output: False
print(move_one_ball([3, 4, 5, 1, 2]))  # Output: True
print(move_one_ball([3, 4, 5, 1, 2]))  # Output: False
