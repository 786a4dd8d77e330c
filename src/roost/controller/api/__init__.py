"""controller/api"""
