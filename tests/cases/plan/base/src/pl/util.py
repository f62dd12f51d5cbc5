def weight(n, c):
    return n * c
