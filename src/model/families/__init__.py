"""Model families: each file subclasses src.model.interface.ModelSpec for one way of building models.

cs336: our TransformerLM (src/model/transformer.py) from a ModelConfig. hf: any transformers causal LM from its
config.json. A new family is one file here and its conformance test (tests/model/test_conformance.py).
"""
