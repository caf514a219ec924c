# A classic beginner mistake: input() gives strings, so "+" concatenates them.
a, b = input().split()
print(a + b)
