"""Graph builders (installed as ``agentmm.graphs``): the default turn graph and the Agent facade."""
