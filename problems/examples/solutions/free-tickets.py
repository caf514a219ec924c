import heapq
import sys


def main() -> None:
    data = sys.stdin.buffer.read().split()
    n, m, k = int(data[0]), int(data[1]), int(data[2])
    adjacency = [[] for _ in range(n + 1)]
    pos = 3
    for _ in range(m):
        u, v, w = int(data[pos]), int(data[pos + 1]), int(data[pos + 2])
        pos += 3
        adjacency[u].append((v, w))
        adjacency[v].append((u, w))
    # Dijkstra over states (city, tickets used): a ticket makes one flight free.
    inf = float("inf")
    dist = [[inf] * (k + 1) for _ in range(n + 1)]
    dist[1][0] = 0
    heap = [(0, 1, 0)]
    while heap:
        d, u, used = heapq.heappop(heap)
        if d > dist[u][used]:
            continue
        for v, w in adjacency[u]:
            if d + w < dist[v][used]:
                dist[v][used] = d + w
                heapq.heappush(heap, (d + w, v, used))
            if used < k and d < dist[v][used + 1]:
                dist[v][used + 1] = d
                heapq.heappush(heap, (d, v, used + 1))
    best = min(dist[n])
    print(best if best < inf else -1)


main()
