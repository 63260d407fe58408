#!/usr/bin/env python3
"""Validate Kubernetes objects of built-in kinds against the Kubernetes API schema.

  validate_k8s.py --k8s-version 1.35.0 --custom-group devices.kubeedge.io --objects FILE [...]

Uses the strict JSON schemas of the `kubernetes-validate` package (the API's OpenAPI
definitions, with unknown fields rejected). Objects whose API group is given with
--custom-group are listed as "custom" (validate them with validate_crd.py); any other
kind without a schema fails. Prints one line per object and a closing line
`k8s-validation: N passed, M failed, C custom`; exit 1 on any failure or when nothing passed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import kubernetes_validate
import yaml


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--k8s-version', required=True)
    p.add_argument('--custom-group', action='append', default=[])
    p.add_argument('--objects', nargs='+', required=True)
    a = p.parse_args()
    passed = failed = custom = 0
    for o in a.objects:
        with open(o, encoding='utf-8') as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for i, d in enumerate(docs):
            name = f"{Path(o).name}#{i} {d.get('kind')} {d.get('metadata', {}).get('name')}"
            group = str(d.get('apiVersion', '')).rpartition('/')[0]
            if group in a.custom_group:
                custom += 1
                print(f'custom {name}')
                continue
            try:
                kubernetes_validate.validate(d, a.k8s_version, strict=True)
            except kubernetes_validate.ValidationError as e:
                failed += 1
                path = '.'.join(map(str, e.path)) or '<root>'
                print(f'FAIL {name}: {path}: {e.message}')
                continue
            except kubernetes_validate.SchemaNotFoundError as e:
                failed += 1
                print(f'FAIL {name}: no schema: {e}')
                continue
            passed += 1
            print(f'ok   {name}')
    print(f'k8s-validation: {passed} passed, {failed} failed, {custom} custom')
    return 1 if failed or passed == 0 else 0


if __name__ == '__main__':
    sys.exit(main())
