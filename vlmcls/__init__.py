"""vlmcls: vision-language models as N-way image classifiers, benchmarked with pytest.

Importing this package stays light: torch and transformers load only when a case needs a model.
"""
__version__ = "0.1.0"
