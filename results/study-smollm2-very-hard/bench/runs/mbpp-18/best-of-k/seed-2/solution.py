def remove_dirty_chars(string, input_string):
    return ''.join([c for c in string if c not in input_string])
