"""Perception and utility tools (installed as ``agentmm.tools``), each a LangChain tool."""
