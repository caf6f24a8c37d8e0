"""The words captions are composed from: views and finding sentences, per dataset.

:mod:`cxrlab.captioning.data` writes captions with them and
:func:`cxrlab.captioning.evaluate.grounding` reads them back, so both live here, apart
from the data readers.
"""

VIEWS = {"PA": "PA", "AP": "AP", "AP Supine": "AP supine"}
COVID_FINDINGS = {
    "COVID-19": "Findings consistent with COVID-19 pneumonia.",
    "COVID-19, ARDS": "Findings consistent with COVID-19 pneumonia and ARDS.",
    "No Finding": "No acute cardiopulmonary abnormality.",
}
NIH_LABELS = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "pulmonary edema",
    "Effusion": "pleural effusion",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Hernia": "hiatal hernia",
    "Infiltration": "infiltration",
    "Mass": "mass",
    "Nodule": "nodule",
    "Pleural_Thickening": "pleural thickening",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
}
