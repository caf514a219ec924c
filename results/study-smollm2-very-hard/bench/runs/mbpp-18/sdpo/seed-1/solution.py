def remove_dirty_chars(string_to_remove, string_to_remove_to_return):
    return ''.join([i for i in str(string_to_remove) if i not in string_to_remove_to_return])
