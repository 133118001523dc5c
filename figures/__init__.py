"""The figures and the report the plots stage writes to reports/.

test_set.py  what the model does on the test split: predictions, mistakes, confusion matrix,
             accuracy per class, confidence
training.py  how it trained and what it learned: the training curves, the first layer's weights
report.py    reports/report.md, the checks of what it is written from, and saving a figure
"""
