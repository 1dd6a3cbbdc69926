"""The interactive ``agentmm chat``: a prompt_toolkit line editor and rich rendering over ``Agent``.

Nothing here is imported until the REPL starts, so ``agentmm --help`` stays instant; the
heavy terminal libraries are imported inside the functions that need them.
"""
