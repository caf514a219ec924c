def move_one_ball(arr):
    """We have an array 'arr' of N integers arr[1], arr[2], ..., arr[N].The
    numbers in the array will be randomly ordered. Your task is to determine if
    it is possible to get an array sorted in non-decreasing order by performing 
    the following operation on the given array:
        You are allowed to perform right shift operation any number of times.
    
    One right shift operation means shifting all elements of the array by one
    position in the right direction. The last element of the array will be moved to
    the starting position in the array i.e. 0th index. 

    If it is possible to obtain the sorted array by performing the above operation
    then return True else return False.
    If the given array is empty then return True.

    Note: The given list is guaranteed to have unique elements.

    For Example:
    
    move_one_ball([3, 4, 5, 1, 2])==>True
    Explanation: By performin 2 right shift operations, non-decreasing order can
                 be achieved for the given array.
    move_one_ball([3, 5, 4, 1, 2])==>False
    Explanation: It is not possible to get non-decreasing order for the given
                array by performing any number of right shift operations.

    """
    if not arr:
        return True

    n = len(arr)
    if n == 1:
        return True

    def is_sorted(arr):
        return all(arr[i] <= arr[i + 1] for i in range(n - 1))

    def can_be_sorted_in_non_decreasing(arr):
        if is_sorted(arr):
            return True

        # Find the maximum and minimum elements in the array
        max_element = max(arr)
        min_element = min(arr)

        # Check if we can perform any right shift operations to sort the array
        if max_element < min_element:
            return False

        # Determine the number of right shifts needed
        num_shifts = 0
        for i in range(1, n):
            if arr[i] < arr[i - 1]:
                num_shifts += 1

        return num_shifts == 1

    if can_be_sorted_in_non_decreasing(arr):
        return True
    else:
        return False

# Test cases
print(move_one_ball([3, 4, 5, 1, 2]))  # True
print(move_one_ball([3, 5, 4, 1, 2]))  # False
