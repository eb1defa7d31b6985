"""Console scripts for people with their own checkpoints: mae-convert, mae-parity, mae-reconstruct.

Exit codes, the same for all three: 0 success; 1 mae-parity found a stage outside its tolerance; 2 bad input
(arguments, a file that is not a checkpoint or not this architecture, a missing image or flag), reported as one
line on stderr, `mae-xxx: error: ...`.
"""
