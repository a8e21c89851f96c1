"""The bundled demo: a tiny timm ViT trained on scikit-learn's digits, and the digits themselves."""

ARCHITECTURE = "tomebench_demo_vit"
NAME = f"{ARCHITECTURE}.digits"  # here, not in model.py, so naming the demo does not import timm
