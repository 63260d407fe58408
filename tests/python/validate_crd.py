#!/usr/bin/env python3
"""Validate Kubernetes objects against CustomResourceDefinition schemas.

  validate_crd.py --crds DIR_OR_FILE [...] --objects FILE [...]

Every object whose apiVersion/kind is defined by one of the CRDs is validated
against that version's openAPIV3Schema (JSON Schema; the x-kubernetes-*
extensions are honoured where they change validity: preserve-unknown-fields
allows any properties, int-or-string allows both). Objects of other kinds are
listed as "no CRD". Prints one line per object and a closing line
`crd-validation: N passed, M failed`; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import jsonschema
import yaml


def load_docs(path: Path):
    with path.open(encoding='utf-8') as f:
        return [d for d in yaml.safe_load_all(f) if d]


def drop_nulls(v):
    """The API server drops null values of non-nullable fields before validating."""
    if isinstance(v, dict):
        return {k: drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [drop_nulls(x) for x in v]
    return v


def to_jsonschema(s):
    """Openapi v3 (CRD flavour) -> JSON Schema draft 7."""
    s = copy.deepcopy(s)

    def walk(node):
        if not isinstance(node, dict):
            return node
        if node.get('x-kubernetes-int-or-string'):
            node.pop('type', None)
            node['anyOf'] = [{'type': 'integer'}, {'type': 'string'}]
        if node.get('nullable'):
            t = node.get('type')
            if isinstance(t, str):
                node['type'] = [t, 'null']
        for key in ('properties', 'patternProperties'):
            if key in node:
                for k, v in node[key].items():
                    node[key][k] = walk(v)
        for key in ('items', 'additionalProperties', 'not'):
            if isinstance(node.get(key), dict):
                node[key] = walk(node[key])
        for key in ('allOf', 'anyOf', 'oneOf'):
            if key in node:
                node[key] = [walk(x) for x in node[key]]
        if node.get('type') == 'object' and 'properties' in node and not node.get('x-kubernetes-preserve-unknown-fields'):
            # Kubernetes prunes unknown fields rather than rejecting them; an
            # example that relies on a field the CRD does not know is wrong
            # for us, so unknown fields are errors here.
            node.setdefault('additionalProperties', False) if 'additionalProperties' not in node else None
        return node

    out = walk(s)
    # metadata is validated by the API server itself, not the CRD schema.
    if isinstance(out.get('properties', {}).get('metadata'), dict):
        out['properties']['metadata'] = {'type': 'object'}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--crds', nargs='+', required=True)
    p.add_argument('--objects', nargs='+', required=True)
    p.add_argument('--require-all', action='store_true', help='an object without a CRD is a failure')
    a = p.parse_args()
    schemas = {}
    for c in a.crds:
        paths = sorted(Path(c).glob('*.yaml')) if Path(c).is_dir() else [Path(c)]
        for path in paths:
            for d in load_docs(path):
                if d.get('kind') != 'CustomResourceDefinition':
                    continue
                group = d['spec']['group']
                kind = d['spec']['names']['kind']
                for v in d['spec']['versions']:
                    schema = v.get('schema', {}).get('openAPIV3Schema')
                    if schema:
                        schemas.setdefault((f"{group}/{v['name']}", kind), []).append((path.name, to_jsonschema(schema)))
    passed = failed = 0
    for o in a.objects:
        for i, d in enumerate(load_docs(Path(o))):
            key = (d.get('apiVersion'), d.get('kind'))
            name = f"{o}#{i} {key[1]} {d.get('metadata', {}).get('name')}"
            if key not in schemas:
                if a.require_all:
                    print(f'FAIL {name}: no CRD for {key[0]} {key[1]}')
                    failed += 1
                else:
                    print(f'no CRD {name}')
                continue
            for crd_file, schema in schemas[key]:
                errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(drop_nulls(d)), key=lambda e: list(e.path))
                if errors:
                    failed += 1
                    for e in errors[:5]:
                        print(f"FAIL {name} against {crd_file}: {'.'.join(map(str, e.path)) or '<root>'}: {e.message}")
                else:
                    passed += 1
                    print(f'ok   {name} against {crd_file}')
    print(f'crd-validation: {passed} passed, {failed} failed')
    return 1 if failed or passed == 0 else 0


if __name__ == '__main__':
    sys.exit(main())
