# cli/ — xe, the command-line client (to be written).
