"""workbench.probes"""
