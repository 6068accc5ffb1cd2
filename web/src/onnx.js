// The few parts of an ONNX file gapcam reads itself: metadata_props and the graph's input and output shapes.
// ONNX is protobuf; this reads its wire format directly (onnxruntime-web does not expose metadata_props).
// Field numbers from onnx/onnx.proto: ModelProto.graph 7, .metadata_props 14; GraphProto.initializer 5,
// .input 11, .output 12; ValueInfoProto.name 1, .type 2; TypeProto.tensor_type 1; Tensor.shape 2;
// TensorShapeProto.dim 1; Dimension.dim_value 1, .dim_param 2; StringStringEntryProto.key 1, .value 2;
// TensorProto.name 8.

const text = new TextDecoder("utf-8", { fatal: false });

class Reader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
  }

  varint() {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (this.pos >= this.end) throw new Error("truncated varint");
      const byte = this.bytes[this.pos++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
      if (scale > 2 ** 63) throw new Error("varint too long");
    }
  }

  // Each field as [number, wire type, value]: a number for varints, [start, end] for length-delimited fields.
  *fields() {
    while (this.pos < this.end) {
      const key = this.varint();
      const number = Math.floor(key / 8);
      const type = key % 8;
      if (type === 0) yield [number, type, this.varint()];
      else if (type === 2) {
        const length = this.varint();
        const start = this.pos;
        this.pos += length;
        if (this.pos > this.end) throw new Error("truncated field");
        yield [number, type, [start, this.pos]];
      } else if (type === 1 || type === 5) this.pos += type === 1 ? 8 : 4;
      else throw new Error(`unknown wire type ${type}`);
    }
    if (this.pos !== this.end) throw new Error("truncated message");
  }

  sub([start, end]) {
    return new Reader(this.bytes, start, end);
  }

  string([start, end]) {
    return text.decode(this.bytes.subarray(start, end));
  }
}

function readEntry(reader) {
  let key = "";
  let value = "";
  for (const [number, type, span] of reader.fields()) {
    if (type !== 2) continue;
    if (number === 1) key = reader.string(span);
    else if (number === 2) value = reader.string(span);
  }
  return [key, value];
}

// A dimension as onnxruntime reports it: its value (a number), its symbolic name (a string), or null.
function readDim(reader) {
  let dim = null;
  for (const [number, type, value] of reader.fields()) {
    if (number === 1 && type === 0) dim = value;
    else if (number === 2 && type === 2) dim = reader.string(value);
  }
  return dim;
}

function only(reader, wanted) {
  for (const [number, type, value] of reader.fields()) {
    if (number === wanted && type === 2) return reader.sub(value);
  }
  return null;
}

function readValueInfo(reader) {
  let name = "";
  let shape = null;
  for (const [number, type, value] of reader.fields()) {
    if (type !== 2) continue;
    if (number === 1) name = reader.string(value);
    else if (number === 2) {
      const tensor = only(reader.sub(value), 1);
      const dims = tensor && only(tensor, 2);
      shape = dims ? [...dims.fields()].filter(([n, t]) => n === 1 && t === 2).map(([, , span]) => readDim(dims.sub(span))) : null;
    }
  }
  return { name, shape };
}

function readTensorName(reader) {
  for (const [number, type, value] of reader.fields()) {
    if (number === 8 && type === 2) return reader.string(value);
  }
  return "";
}

function readGraph(reader) {
  const initializers = new Set();
  const inputs = [];
  const outputs = [];
  for (const [number, type, value] of reader.fields()) {
    if (type !== 2) continue;
    if (number === 5) initializers.add(readTensorName(reader.sub(value)));
    else if (number === 11) inputs.push(readValueInfo(reader.sub(value)));
    else if (number === 12) outputs.push(readValueInfo(reader.sub(value)));
  }
  // Older files list initializers among the inputs; onnxruntime (and CamSession) does not count them.
  return { inputs: inputs.filter((input) => !initializers.has(input.name)), outputs };
}

/**
 * The metadata (key -> value strings) and graph signature of an ONNX file.
 * Throws an Error naming `source` when the bytes are not an ONNX model.
 */
export function readOnnx(bytes, source) {
  const reader = new Reader(bytes);
  const metadata = {};
  let graph = null;
  try {
    for (const [number, type, value] of reader.fields()) {
      if (number === 14 && type === 2) {
        const [key, entry] = readEntry(reader.sub(value));
        metadata[key] = entry;
      } else if (number === 7 && type === 2) graph = readGraph(reader.sub(value));
    }
  } catch (err) {
    throw new Error(`${source}: not an ONNX model (${err.message})`);
  }
  if (graph === null) throw new Error(`${source}: not an ONNX model (no graph)`);
  return { metadata, ...graph };
}
