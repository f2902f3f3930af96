"""workbench.encoders"""
