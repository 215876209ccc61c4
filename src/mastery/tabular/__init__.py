"""Tabular machine learning: preprocessing pipelines, classical models and a from-scratch logistic regression.

Modules import scikit-learn at the top; XGBoost and SHAP are imported inside the functions that
need them, so importing ``mastery.tabular`` stays cheap and ``mastery.core`` never pulls these in.
"""
