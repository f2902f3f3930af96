"""workbench.train"""
