"""Solutions for notebook 11_when_int8_goes_wrong."""


def keep_in_float(gain, drop_of, max_drop):
    """Exercise 1: add nodes largest gain first; stop as soon as the measured drop is within max_drop."""
    keep = []
    for node in sorted(gain, key=lambda n: -gain[n]):
        if drop_of(keep) <= max_drop:
            break
        keep.append(node)
    return keep


def max_pair_sum(act_bits, weight_bits):
    """Exercise 2: |x0·w0 + x1·w1| <= 2 · (2^a - 1) · 2^(w-1) (largest activation times most negative weight)."""
    return 2 * (2**act_bits - 1) * 2 ** (weight_bits - 1)
