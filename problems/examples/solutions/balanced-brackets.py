import sys


def is_balanced(line: str) -> bool:
    closing_to_opening = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in line:
        if ch in "([{":
            stack.append(ch)
        elif not stack or stack.pop() != closing_to_opening[ch]:
            return False
    return not stack


def main() -> None:
    lines = sys.stdin.read().split("\n")
    t = int(lines[0])
    print("\n".join("YES" if is_balanced(lines[1 + i].strip()) else "NO" for i in range(t)))


main()
